"""The disposable caches rebuilt from the tree at HEAD (``state.db`` and ``index.json``) and every
question hystate asks of them."""
