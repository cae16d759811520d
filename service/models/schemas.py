"""Response pieces every model's endpoints share."""

from pydantic import BaseModel, Field


class ModelRef(BaseModel):
    """Which model answered: its name and version (the first 12 hex digits of the ONNX file's SHA-256)."""

    name: str = Field(examples=["digits"])
    version: str = Field(examples=["3f2a9c1b07de"])
