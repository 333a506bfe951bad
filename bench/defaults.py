"""Defaults that the command line names in its help, kept in a module that imports nothing, so that ``cafebench
tune --help`` or ``cafebench report --help`` answers without loading Optuna, MLflow or PyTorch."""

UI_HOST = "127.0.0.1"  # where cafebench ui serves the MLflow UI (this machine only)
UI_PORT = 5000  # its port unless --port names another

DEFAULT_STORAGE = "sqlite:///optuna.db"  # where an Optuna study lives unless --storage names another
