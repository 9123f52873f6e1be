"""The Tkinter/ttk wizard over the engine: ``python -m wizard`` opens it."""
