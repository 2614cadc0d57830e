"""An API gateway for image generation, speaking OpenAI's Images API."""

__version__ = "0.1.0"
