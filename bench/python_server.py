"""The Python peer of the classify-image benchmark: what most users would write instead of Nimbus.

An aiohttp server with ONNX Runtime and Pillow doing what functions/classify-image does: decode a
PNG or JPEG, resize so the shorter side is 256 (bilinear), centre-crop 224x224, normalise each
channel value as (x - 127) / 128, lay out NCHW f32 [1, 3, 224, 224], run EfficientNet-Lite0 and
answer the top-5 ImageNet labels as JSON. Decoding and inference run on the default thread pool so
the event loop keeps accepting requests.

    python bench/python_server.py --port 8000 --model efficientnet_lite0.onnx --labels labels.json

POST / with the image as the body; GET /healthz answers 200 once the model is loaded.
"""

import argparse
import asyncio
import io
import json

import numpy as np
import onnxruntime as ort
from aiohttp import web
from PIL import Image

RESIZE_SHORTER = 256
CROP = 224


def preprocess(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    if width <= height:
        size = (RESIZE_SHORTER, (height * RESIZE_SHORTER + width // 2) // width)
    else:
        size = ((width * RESIZE_SHORTER + height // 2) // height, RESIZE_SHORTER)
    image = image.resize(size, Image.BILINEAR)
    left = (size[0] - CROP) // 2
    top = (size[1] - CROP) // 2
    image = image.crop((left, top, left + CROP, top + CROP))
    pixels = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
    return pixels.transpose(2, 0, 1)[np.newaxis].copy()


class Classifier:
    def __init__(self, model: str, labels: str):
        self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        with open(labels) as f:
            self.labels = json.load(f)

    def top5(self, data: bytes) -> dict:
        (probs,) = self.session.run(["probs"], {"input": preprocess(data)})
        probs = probs[0]
        best = np.argsort(-probs, kind="stable")[:5]
        return {
            "top5": [
                {"label": self.labels[i], "index": int(i), "probability": float(probs[i])}
                for i in best
            ]
        }


def make_app(classifier: Classifier) -> web.Application:
    async def classify(request: web.Request) -> web.Response:
        data = await request.read()
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(None, classifier.top5, data)
        except (OSError, ValueError) as error:
            return web.json_response(
                {"error": {"code": "bad_request", "message": str(error)}}, status=400
            )
        return web.json_response(answer)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=16 << 20)
    app.router.add_post("/", classify)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--labels", required=True)
    args = parser.parse_args()
    web.run_app(
        make_app(Classifier(args.model, args.labels)),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
