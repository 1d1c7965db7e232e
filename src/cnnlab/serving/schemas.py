"""The JSON answers of the page's API (``/api/predict``, ``/api/model``, ``/api/health``),
as pydantic models: FastAPI validates them and documents them in ``/openapi.json``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FeatureMapGrid(BaseModel):
    layer: str = Field(description="the conv layer's name (its output, after its activation)")
    activation: str = Field(description="the conv layer's activation (Keras' name)")
    channels: int
    height: int = Field(description="height of one map in pixels")
    width: int = Field(description="width of one map in pixels")
    columns: int = Field(description="maps per row in the grid image")
    png: str = Field(description="data URL of a PNG grid of all maps, each scaled to its max")


class TopClass(BaseModel):
    index: int = Field(description="the class's index (its output unit)")
    label: str = Field(description="the class's name, as the run recorded it")
    probability: float


class PredictResponse(BaseModel):
    label: str = Field(description="the predicted class's name, as the run recorded it")
    class_index: int = Field(description="the predicted class's index")
    digit: int = Field(description="the same index (the digit, for MNIST), kept for older clients")
    probabilities: list[float] = Field(description="softmax probabilities, in the classes' order")
    top: list[TopClass] = Field(description="the most probable classes, most probable first")
    inverted: bool = Field(
        description="whether the image was dark-on-light and was inverted (digit runs only)"
    )
    input_png: str = Field(description="data URL of the PNG the network saw (its input size)")
    feature_maps: list[FeatureMapGrid]
    milliseconds: float = Field(
        description="server time to decode, predict and encode the images (no queueing)"
    )


class Health(BaseModel):
    status: str
    model: str = Field(description="the network's name")
    version: str
    max_bytes: int
    max_pixels: int


class FeatureLayer(BaseModel):
    layer: str = Field(description="a conv layer, whose maps /api/predict returns")
    activation: str
    channels: int
    height: int
    width: int


class LayerShape(BaseModel):
    name: str
    class_name: str = Field(description="Keras' layer class, e.g. Conv2D")
    output_shape: list[int] = Field(description="channels last, without the batch axis")


class ModelInfo(BaseModel):
    name: str
    input_shape: list[int] = Field(description="channels last, without the batch axis")
    classes: int = Field(description="the number of classes")
    class_names: list[str] = Field(description="the classes' names, as the run recorded them")
    drawing: bool = Field(description="whether the page offers the drawing pad (digit runs)")
    preprocessing: str = Field(description="what is done to an image before the network sees it")
    input_scale: str = Field(description="how its pixels become the network's inputs")
    params: int
    layers: list[LayerShape]
    feature_maps: list[FeatureLayer]


class ErrorDetail(BaseModel):
    detail: str
