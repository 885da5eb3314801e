"""Using a trained model: loading it from its checkpoint (`trained_model`), scoring it
(`evaluate`), applying it to new files (`predict`) and exporting it (`export`).
"""
