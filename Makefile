# Each target bootstraps what it needs: system packages (apt, only when missing and only as root),
# then .venv with the CPU build of torch (TORCH=torch for the CUDA wheels instead).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= audio,dev,eval,data
MEDIAPIPE ?= mediapipe==0.10.21
# portaudio: PyAudio's build; espeak-ng, mbrola voices and sox: the synthetic speech corpus
APT_PACKAGES ?= portaudio19-dev espeak-ng sox libsox-fmt-all mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1
APT_NONFREE := /etc/apt/sources.list.d/voxsight-contrib-non-free.sources
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

.PHONY: demo test bench lint setup system-deps clean data

# The live graph (launch/lip2speech_file.yaml) on the bundled clip: out/lip2speech.wav, the lip-read text,
# whisper's transcript and a latency table. DEMO_ARGS: launch-file overrides, e.g.
# DEMO_ARGS="lip2speech.backend:=onnxruntime lip2speech.nfe:=2"
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/python bench/live.py demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/wire.py
	$(BIN)/python bench/supervisor.py
	$(BIN)/python bench/tracker.py
	$(BIN)/python bench/eval.py
	$(BIN)/python bench/render.py
	$(BIN)/python bench/corpus.py
	$(BIN)/python bench/corpus_audio.py
	$(BIN)/python bench/vocoder.py
	$(BIN)/python bench/models.py
	$(BIN)/python bench/samplers.py
	$(BIN)/python bench/lip2speech.py ../shared/real/grid-dev --limit 3
	$(BIN)/python bench/live.py bench --minutes 10

# The training and evaluation data the README's "Data and training" starts from: the four synthetic corpora
# in the order they came (main; faces derived from its training people; mouths closing between syllables;
# mouths also resting open), their tracker features and phone lengths; every step resumes where it stopped.
# About 3 hours on 2 cores; the main corpus (the evaluations' test split) comes first.
DATA ?= /work/data
SYNTH := $(BIN)/voxsight data synth --hours 2.2 --seed 1 --jobs 2
FEATURES := $(BIN)/voxsight data features
data: $(STAMP)
	$(SYNTH) --out $(DATA)/voxsight-corpus
	$(FEATURES) $(DATA)/voxsight-corpus --cache $(DATA)/features
	test -d $(DATA)/faces-morph || $(BIN)/voxsight data morph --corpus $(DATA)/voxsight-corpus \
	  --out $(DATA)/faces-morph
	$(BIN)/voxsight data synth --out $(DATA)/morph-corpus --faces $(DATA)/faces-morph --hours 1.5 --seed 4 \
	  --val-fraction 0 --noisy none --jobs 2
	$(FEATURES) $(DATA)/morph-corpus --cache $(DATA)/features
	$(SYNTH) --out $(DATA)/closure-corpus --closure 1 --noisy none
	$(FEATURES) $(DATA)/closure-corpus --cache $(DATA)/features
	$(SYNTH) --out $(DATA)/rest-corpus --closure 1 --rest-open 0.3 --noisy none
	$(FEATURES) $(DATA)/rest-corpus --cache $(DATA)/features
	$(BIN)/python -m engines.text.durations $(DATA)/voxsight-corpus $(DATA)/morph-corpus

lint: $(STAMP)
	$(BIN)/ruff check .

setup: $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages:$$missing"; \
	    . /etc/os-release; \
	    if [ "$$ID" = debian ] && [ ! -e $(APT_NONFREE) ]; then \
	      echo "enabling Debian contrib and non-free (mbrola and its voices live there): $(APT_NONFREE)"; \
	      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s %s-updates\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
	        "$$VERSION_CODENAME" "$$VERSION_CODENAME" > $(APT_NONFREE); \
	    fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing system packages:$$missing"; \
	    echo "install them with: sudo apt-get install$$missing   (then re-run make)"; \
	    echo "(on Debian, mbrola and its voices need the contrib and non-free components)"; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml Makefile | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	echo "$(TORCH)" > $(VENV)/constraints.txt
	PIP_CONSTRAINT=$(VENV)/constraints.txt $(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps "$(MEDIAPIPE)"  # the last release that bundles its face models
	rm -f $(VENV)/.installed-* && touch $@

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
