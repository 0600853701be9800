# bench/suites/lib.sh — what every suite shares (sourced, not run).
#
# A suite: parses the common flags (suite_parse), sets loom up — a small
# random model and PEFT adapters made by loom-mkmodel, one loom-worker and a
# loom-gateway on a free port — or takes --target URL (another
# OpenAI-compatible server, the adapter passed as "model"), runs one
# loom-bench sweep into bench/results/NAME.json and plots it with bench/plot.
#
# Common flags:
#   --target URL         measure that server instead of starting loom
#   --model NAME         base model name at the target (loom: "bench")
#   --adapter-prefix P   adapter names are P0..P(N-1) (lora-)
#   --adapters LIST      override the suite's adapter counts (comma list)
#   --duration S         seconds of load per point (suite default)
#   --quick              3 s per point and fewer points (a smoke test)
#   --out DIR            results folder (bench/results)
#   --name NAME          results base name (the suite's name)
#   --label TEXT         legend label (loom, or the target URL)
#   --threads N          loom-worker OpenBLAS threads (1)
#   --no-plot            JSON only
# Environment: LOOM_BIN_DIR (default build/bin; built with scripts/setup
# when missing), LOOM_BENCH_WORK (models and adapters; default .loom/bench).

suite_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Model shape for a 2-core CPU: ~4M parameters, minutes per suite.
SUITE_MODEL_ARGS=(--hidden 256 --ffn 688 --layers 4 --heads 8 --kv-heads 4 --vocab 2048
  --ctx 1024 --tokenizer bytelevel --seed 1)
SUITE_ADAPTER_ARGS=(--rank 8 --alpha 16 --targets q_proj,v_proj)

suite_help() { # the suite's header comment, then the common flags
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  echo
  awk '/^# Common flags:/ { on = 1 } on && /^#/ { sub(/^# ?/, ""); print; next } on { exit }' \
    "$suite_root/bench/suites/lib.sh"
}

suite_parse() { # suite_parse NAME "$@"
  SUITE=$1; shift
  TARGET= MODEL= PREFIX=lora- ADAPTERS_OVERRIDE= DURATION= QUICK=0 PLOT=1 THREADS=1
  OUT=$suite_root/bench/results NAME=$SUITE LABEL=
  while (($#)); do
    case "$1" in
      --target) TARGET=${2:?--target needs a URL}; shift 2 ;;
      --model) MODEL=${2:?--model needs a name}; shift 2 ;;
      --adapter-prefix) PREFIX=${2:?}; shift 2 ;;
      --adapters) ADAPTERS_OVERRIDE=${2:?--adapters needs a comma list}; shift 2 ;;
      --duration) DURATION=${2:?--duration needs seconds}; shift 2 ;;
      --quick) QUICK=1; shift ;;
      --out) OUT=${2:?}; shift 2 ;;
      --name) NAME=${2:?}; shift 2 ;;
      --label) LABEL=${2:?}; shift 2 ;;
      --threads) THREADS=${2:?}; shift 2 ;;
      --no-plot) PLOT=0; shift ;;
      -h|--help) suite_help; exit 0 ;;
      *) echo "$SUITE: unknown flag $1 (see --help)" >&2; exit 2 ;;
    esac
  done
  BIN=${LOOM_BIN_DIR:-$suite_root/build/bin}
  WORK=${LOOM_BENCH_WORK:-$suite_root/.loom/bench}
  mkdir -p "$OUT"
  if [ -z "$TARGET" ]; then
    [ -n "$MODEL" ] || MODEL=bench
    [ -n "$LABEL" ] || LABEL=loom
  else
    [ -n "$MODEL" ] || { echo "$SUITE: --target needs --model NAME (the served base model)" >&2; exit 2; }
    [ -n "$LABEL" ] || LABEL=$TARGET
  fi
  if [ ! -x "$BIN/loom-bench" ] || { [ -z "$TARGET" ] && [ ! -x "$BIN/loom-gateway" ]; }; then
    if [ -z "${LOOM_BIN_DIR:-}" ]; then
      "$suite_root/scripts/setup" >&2
    else
      echo "$SUITE: loom programs missing in $BIN" >&2; exit 1
    fi
  fi
}

# Whether the gateway takes --adapter NAME=DIR[@BASE] (multi-LoRA landed).
suite_has_adapters() {
  [ -n "$TARGET" ] && return 0
  "$BIN/loom-gateway" --help 2>&1 | grep -q -- '--adapter'
}

# suite_adapter_counts DEFAULT_LIST: the counts to run, 0 when loom cannot
# serve adapters yet (the suite then measures the base model).
suite_adapter_counts() {
  local list=${ADAPTERS_OVERRIDE:-$1}
  if ! suite_has_adapters; then
    echo "$SUITE: loom-gateway has no --adapter yet: measuring the base model (adapters=0)" >&2
    list=0
  fi
  echo "$list"
}

suite_model() {
  local dir=$WORK/model
  if [ ! -f "$dir/config.json" ]; then
    mkdir -p "$WORK"
    echo "$SUITE: generating the benchmark model in $dir" >&2
    "$BIN/loom-mkmodel" model --out "$dir" "${SUITE_MODEL_ARGS[@]}" >&2
  fi
  echo "$dir"
}

suite_adapters() { # suite_adapters N: makes PREFIX0..PREFIX(N-1) (cached)
  local n=$1 i
  mkdir -p "$WORK/adapters"
  for ((i = 0; i < n; i++)); do
    [ -f "$WORK/adapters/$i/adapter_config.json" ] && continue
    "$BIN/loom-mkmodel" adapter --model "$WORK/model" --out "$WORK/adapters/$i" \
      "${SUITE_ADAPTER_ARGS[@]}" --seed $((i + 1)) >/dev/null
  done
}

suite_free_port() { # below Linux's ephemeral range (32768-), where clients' ports go
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 12000))
    if ! curl -s -o /dev/null "http://127.0.0.1:$p/" 2>/dev/null; then echo "$p"; return; fi
  done
  echo "$SUITE: no free port found" >&2; exit 1
}

suite_stop() {
  local p
  for p in ${SUITE_PIDS:-}; do kill -TERM "$p" 2>/dev/null || true; done
  for p in ${SUITE_PIDS:-}; do wait "$p" 2>/dev/null || true; done
  SUITE_PIDS=
  [ -n "${SUITE_RUN:-}" ] && rm -rf "$SUITE_RUN"
  SUITE_RUN=
}

# suite_start MAX_ADAPTERS: starts loom (unless --target) and sets URL; the
# array SUITE_WORKER_ARGS (if set) goes to loom-worker.
suite_start() {
  local nad=$1 model port gw_args=() i
  if [ -n "$TARGET" ]; then URL=$TARGET; return; fi
  model=$(suite_model)
  if ((nad > 0)); then
    echo "$SUITE: $nad adapters in $WORK/adapters" >&2
    suite_adapters "$nad"
    for ((i = 0; i < nad; i++)); do gw_args+=(--adapter "$PREFIX$i=$WORK/adapters/$i@$MODEL"); done
  fi
  SUITE_RUN=$(mktemp -d /tmp/loom-suite-XXXXXX)
  trap suite_stop EXIT
  trap 'suite_stop; exit 130' INT TERM
  OPENBLAS_NUM_THREADS=$THREADS "$BIN/loom-worker" --listen "ipc://$SUITE_RUN/w0.ipc" \
    --model "$MODEL=$model" --threads "$THREADS" ${SUITE_WORKER_ARGS[@]+"${SUITE_WORKER_ARGS[@]}"} \
    > "$SUITE_RUN/worker.log" 2>&1 &
  SUITE_PIDS="$!"
  local try gw
  for try in 1 2 3 4 5; do # a port probed free may be taken before the gateway binds it
    port=$(suite_free_port)
    "$BIN/loom-gateway" --host 127.0.0.1 --port "$port" --worker "ipc://$SUITE_RUN/w0.ipc" \
      --model "$MODEL=$model" ${gw_args[@]+"${gw_args[@]}"} > "$SUITE_RUN/gateway.log" 2>&1 &
    gw=$!
    URL=http://127.0.0.1:$port
    for _ in $(seq 1 1200); do
      curl -fs "$URL/ready" >/dev/null 2>&1 && break
      kill -0 "$gw" 2>/dev/null || break
      sleep 0.1
    done
    if ! kill -0 "$gw" 2>/dev/null && grep -q "cannot listen" "$SUITE_RUN/gateway.log"; then
      wait "$gw" 2>/dev/null || true
      continue
    fi
    break
  done
  SUITE_PIDS="$SUITE_PIDS $gw"
  if ! curl -fs "$URL/ready" >/dev/null 2>&1; then
    echo "$SUITE: loom did not become ready; logs:" >&2
    tail -n 20 "$SUITE_RUN/worker.log" "$SUITE_RUN/gateway.log" >&2
    if grep -q "too many '--adapter'" "$SUITE_RUN/gateway.log"; then
      echo "$SUITE: this loom-gateway refuses $nad adapters; pass --adapters with smaller" \
        "counts (e.g. --adapters 1,8,64)" >&2
    fi
    exit 1
  fi
  echo "$SUITE: loom serving $MODEL on $URL (1 worker, $THREADS thread(s))" >&2
}

# suite_bench ARGS...: one loom-bench run (a sweep) into $OUT/$NAME.json.
suite_bench() {
  "$BIN/loom-bench" --url "$URL" --model "$MODEL" --adapter-prefix "$PREFIX" \
    --label "$LABEL" --json "$OUT/$NAME.json" "$@"
}

suite_plot() {
  ((PLOT)) || return 0
  "$suite_root/bench/plot" --bin "$BIN/loom-bench" --out "$OUT" "$OUT/$NAME.json"
}
