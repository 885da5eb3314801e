"""The experiment config: its schema (assembled from the component registries), how a
file is read with its base files and the command line's overrides, the plugins that
register components, renamed keys, and error messages a user can act on.

Nothing in this package imports torch: `trainkit validate`, `ls` and `schema` stay quick.
"""
