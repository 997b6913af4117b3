# fowm-ros: the two commands a new user needs are `make demo` and `make test`.
# Every target sets the environment up first (idempotent; seconds when nothing changed).

VENV      := .venv
PY        := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export FASTRTPS_DEFAULT_PROFILES_FILE ?= $(CURDIR)/ros2_ws/src/fowm_bringup/config/fastdds.xml

# Extra arguments for the demo, e.g. `make demo DEMO_ARGS="--task push --online-episodes 5"`
# (`make demo-inprocess DEMO_ARGS=...` takes fowm_bringup.demo's options).
DEMO_ARGS ?=
# Extra arguments for pytest, e.g. `make test PYTEST_ARGS="-k planner -x"`.
PYTEST_ARGS ?=

.PHONY: help setup demo demo-inprocess eval test lint bench lock clean

help:
	@echo "make demo   - set up, then run the main job through the ROS 2 nodes on the MuJoCo sim"
	@echo "make demo-inprocess - the same learning in one process, without nodes (fast experiments)"
	@echo "make eval   - FOWM vs the TD-MPC baseline on reach/push/lift, 3 seeds (hours on a 2-core CPU)"
	@echo "make test   - set up, lint, then run the whole test suite"
	@echo "make bench  - set up, then run the benchmarks, one torch thread each (writes bench-results/)"
	@echo "make lint   - ruff"
	@echo "make setup  - create .venv with every pinned dependency (idempotent)"

setup:
	@bash scripts/setup.sh

# The main job through the ROS 2 stack: bags -> pretraining -> sim, planner, recorder and trainer
# nodes finetuning online -> evaluation through the planner node.
demo: setup
	@$(PY) -m fowm_bringup.ros_demo $(DEMO_ARGS)

# The same algorithm in one process, without nodes: the fast path for experiments.
demo-inprocess: setup
	@$(PY) -m fowm_bringup.demo $(DEMO_ARGS)

# FOWM vs TD-MPC from the camera, as the paper compares them (long; resumable; EVAL_ARGS=--help).
EVAL_ARGS ?=
eval: setup
	@$(PY) -m fowm_bringup.eval $(EVAL_ARGS)

test: setup lint
	@$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/hadolint --config .hadolint.yaml docker/Dockerfile docker/Dockerfile.cuda

# One torch thread per benchmark process unless asked (make bench BENCH_THREADS=2); BENCH_ARGS=--quick, --no-peer
BENCH_THREADS ?= 1
bench: setup
	@$(PY) benchmarks/run_all.py --threads $(BENCH_THREADS) $(BENCH_ARGS)

# Re-pin constraints.txt from the current environment after changing requirements.txt.
lock: setup
	@( head -4 constraints.txt; $(VENV)/bin/pip freeze --exclude-editable \
	   | grep -vE '^(rclpy|rosidl_[a-z_]+|[a-z]+_msgs|[a-z_]+_interfaces|std_srvs|rmw_dds_common)==' \
	   | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/' ) > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) build install log .pytest_cache .ruff_cache
