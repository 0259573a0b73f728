# The image every Kubeflow step runs in (pipelines/kfp.py --image): this project and its pinned
# requirements, MediaPipe's hand models cached at build time (pods need no network at run time).
#   docker build -t registry.example.com/handops:1.0 . && docker push registry.example.com/handops:1.0
# GPU nodes: build FROM an nvidia/cuda runtime image with Python 3.11 and add requirements-gpu.txt.
FROM python:3.11-slim

# libGL/glib: opencv-python (pulled in by Ultralytics) loads them even headless.
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
RUN python -m components.weights fetch --cache_dir .cache/mediapipe

ENV PYTHONPATH=/app PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1
