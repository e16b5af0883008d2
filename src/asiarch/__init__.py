"""asiarch: autonomous neural-architecture research campaigns on Ray."""

__version__ = "0.1.0"

__all__ = ["Campaign"]


def __getattr__(name: str):
    if name == "Campaign":  # imported lazily: `import asiarch` stays light for the sandbox workers
        from asiarch.campaign import Campaign

        return Campaign
    raise AttributeError(f"module 'asiarch' has no attribute {name!r}")
