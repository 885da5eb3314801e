"""Reading runs back: the table of runs (`runs_table`) and their curves (`plots`).
Nothing here imports torch.
"""
