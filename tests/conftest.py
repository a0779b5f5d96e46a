import os

# Tests never draw progress bars and never reach a model hub.
os.environ.setdefault("KIMIDOC_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
