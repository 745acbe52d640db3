#!/usr/bin/env bash
# Training runs longer than a session, as a chain of resumes. The process ends with the session
# that started it (detaching does not save it), but the disk may be kept: each later session on
# the same machine runs `start` again, which continues from the last checkpoint.
#
#   bash bench/marathon.sh start NAME TRAIN-ARGS…   # detached `xtask train TRAIN-ARGS… --name NAME`;
#                                                   # if runs/NAME has a checkpoint, `--resume` instead
#   bash bench/marathon.sh pause NAME               # SIGSTOP: frees the cores for this session's work
#   bash bench/marathon.sh continue NAME            # SIGCONT
#   bash bench/marathon.sh status NAME              # alive or not, the log's last lines, last epoch
#   bash bench/marathon.sh stop NAME                # SIGTERM once: exits after its next checkpoint
#   bash bench/marathon.sh chain FILE               # detached: the runs FILE lists, one after another
#   bash bench/marathon.sh status FILE              # each of FILE's runs: finished, running, stopped
#
# `start` copies the release binary to runs/.marathon/NAME-xtask first, so that rebuilding
# target/ while the run goes on changes nothing under it; with KEEP_BINARY=1 it reuses the copy
# an earlier start made (for a run that must stay on its build to the end, e.g. to keep its
# metrics comparable). With a checkpoint present it runs `train KIND --name NAME --resume` plus
# any extra args given after KIND (e.g. --replicas 2: a resumed run keeps its saved config and
# refuses changed flags, see `train --help`).
#
# A chain file holds one run a line, `NAME KIND TRAIN-ARGS…` (`#` starts a comment): `chain`
# trains them in order in one detached process (log runs/.marathon/chain-<file's name>.log), skips a
# run whose folder holds model.toml (finished), resumes one with a checkpoint (without its
# TRAIN-ARGS: a resumed run keeps its config), and stops at the first run that exits non-zero,
# a stopped one included. Each run's pid is in runs/.marathon/NAME.pid as with `start`, so
# `pause`, `continue`, `stop` and `status` take the run's NAME. Rerunning `chain FILE` in a later
# session goes on where it stopped; all of its runs use one copy of the release binary.
set -euo pipefail
cmd="${1:?start|pause|continue|status}"; name="${2:?run name}"; shift 2
R="${RUNS:-runs}"
# The run starts the binary itself, not through cargo: the malloc settings of .cargo/config.toml's
# [env] (docs/results.md, "The allocator"), unless the caller gives their own.
export GLIBC_TUNABLES="${GLIBC_TUNABLES-$(sed -n 's/^GLIBC_TUNABLES = "\(.*\)"$/\1/p' .cargo/config.toml)}"
dir="$R/.marathon"; mkdir -p "$dir"
pidf="$dir/$name.pid"; log="$dir/$name.log"

# alive [PIDFILE]: whether the pid file's process runs. A finished run can linger as a zombie
# where nothing reaps it: that is not alive; nor is another program that got the pid since.
alive() {
  local f="${1:-$pidf}"
  [ -f "$f" ] || return 1
  local pid st cmdline; pid=$(cat "$f")
  st=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
  cmdline=$(ps -o args= -p "$pid" 2>/dev/null) || return 1
  case "$cmdline" in *xtask* | *" _chain "*) ;; *) return 1 ;; esac
  [ -n "$st" ] && [ "${st#Z}" = "$st" ]
}

# train_args NAME KIND ARGS…: sets `args` to the command line that starts or resumes NAME.
train_args() {
  local run="$1" kind="$2"; shift 2
  if compgen -G "$R/$run/checkpoints/*" >/dev/null; then
    args=(train "$kind" --runs-dir "$R" --name "$run" --resume)
  else
    args=(train "$kind" --runs-dir "$R" --name "$run" "$@")
  fi
}

# last_checkpoint RUN: the name of RUN's newest checkpoint folder (empty without one).
last_checkpoint() { ls "$R/$1/checkpoints" 2>/dev/null | grep -v latest | tail -n 1; }

# chain_runs FILE: FILE's run lines, comments and blank lines left out.
chain_runs() { grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$1"; }

# copy_binary BIN: the release binary to BIN, or BIN kept under KEEP_BINARY=1.
copy_binary() {
  if [ -n "${KEEP_BINARY:-}" ] && [ -x "$1" ]; then
    echo "keeping $1"
  else
    cp target/release/xtask "$1"
  fi
}

case "$cmd" in
  chain)
    # $name is the chain file here; the detached copy of this script works through it.
    [ -f "$name" ] || { echo "no chain file $name"; exit 2; }
    chain=$(basename "$name"); chain="${chain%.*}"
    cpid="$dir/chain-$chain.pid"
    if alive "$cpid"; then
      echo "chain $chain is already running (pid $(cat "$cpid"))"; exit 1
    fi
    copy_binary "$dir/chain-$chain-xtask"
    # bash reads a script as it runs it: the chain runs a copy, so editing this file cannot
    # change a chain under way.
    cp "$0" "$dir/chain-$chain.sh"
    setsid nohup bash "$dir/chain-$chain.sh" _chain "$name" >>"$dir/chain-$chain.log" 2>&1 </dev/null &
    echo $! >"$cpid"
    echo "chain $chain started (pid $!), log $dir/chain-$chain.log"
    ;;
  _chain)
    chain=$(basename "$name"); chain="${chain%.*}"
    bin="$dir/chain-$chain-xtask"
    while read -r -a line; do
      [ "${#line[@]}" -ge 2 ] || continue
      case "${line[0]}" in \#*) continue ;; esac
      run="${line[0]}"
      if [ -f "$R/$run/model.toml" ]; then echo "== $run: finished before, skipped"; continue; fi
      if alive "$dir/$run.pid"; then echo "== $run is running apart from the chain: chain stopped"; exit 1; fi
      train_args "${line[@]}"
      echo "== $(date -u +%FT%TZ) ${args[*]}" | tee -a "$dir/$run.log"
      "$bin" "${args[@]}" >>"$dir/$run.log" 2>&1 </dev/null &
      echo $! >"$dir/$run.pid"
      rc=0; wait $! || rc=$?
      echo "== $(date -u +%FT%TZ) $run: exit $rc"
      [ "$rc" -eq 0 ] || { echo "== chain stopped at $run"; exit "$rc"; }
    done < <(chain_runs "$name")
    echo "== $(date -u +%FT%TZ) chain finished"
    exit 0
    ;;
  stop)
    alive || { echo "$name is not running"; exit 1; }
    pid=$(cat "$pidf")
    kill -CONT "$pid"; kill -TERM "$pid"
    echo "$name: asked to stop at its next checkpoint; waiting"
    while alive; do sleep 5; done
    tail -n 2 "$log"
    ;;
  start)
    if alive; then echo "$name is already running (pid $(cat "$pidf"))"; exit 1; fi
    kind="${1:?train kind, e.g. ib-inn}"; shift
    bin="$dir/$name-xtask"
    copy_binary "$bin"
    train_args "$name" "$kind" "$@"
    # Unlike a chain, `start` passes its extra args on resume too (e.g. --replicas 2).
    if [ "${args[6]:-}" = --resume ]; then args+=("$@"); fi
    echo "== $(date -u +%FT%TZ) ${args[*]}" >>"$log"
    setsid nohup "$bin" "${args[@]}" >>"$log" 2>&1 </dev/null &
    echo $! >"$pidf"
    echo "$name started (pid $!), log $log"
    ;;
  pause | continue)
    alive || { echo "$name is not running"; exit 1; }
    sig=STOP; [ "$cmd" = continue ] && sig=CONT
    kill -"$sig" "$(cat "$pidf")"
    echo "$name: SIG$sig sent"
    ;;
  status)
    if [ -f "$name" ]; then
      # A chain file: each run's state, then the chain's log.
      chain=$(basename "$name"); chain="${chain%.*}"
      while read -r run _; do
        if [ -f "$R/$run/model.toml" ]; then st=finished
        elif alive "$dir/$run.pid"; then st="running, last checkpoint $(last_checkpoint "$run")"
        elif compgen -G "$R/$run/checkpoints/*" >/dev/null; then st="stopped at $(last_checkpoint "$run")"
        else st="not started"; fi
        echo "$run: $st"
      done < <(chain_runs "$name")
      [ -f "$dir/chain-$chain.log" ] && tail -n 3 "$dir/chain-$chain.log"
      exit 0
    fi
    if alive; then
      state=$(ps -o stat= -p "$(cat "$pidf")")
      echo "$name: running (pid $(cat "$pidf"), state $state)"
    else
      echo "$name: not running"
    fi
    [ -f "$log" ] && tail -n 5 "$log" | tr '\r' '\n' | tail -n 5
    [ -f "$R/$name/metrics.csv" ] && tail -n 1 "$R/$name/metrics.csv"
    last_checkpoint "$name" || true
    ;;
  *) echo "unknown command $cmd"; exit 2 ;;
esac
