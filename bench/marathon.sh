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
#
# `start` copies the release binary to runs/.marathon/NAME-xtask first, so that rebuilding
# target/ while the run goes on changes nothing under it; with KEEP_BINARY=1 it reuses the copy
# an earlier start made (for a run that must stay on its build to the end, e.g. to keep its
# metrics comparable). With a checkpoint present it runs `train KIND --name NAME --resume` plus
# any extra args given after KIND (e.g. --replicas 2: a resumed run keeps its saved config and
# refuses changed flags, see `train --help`).
set -euo pipefail
cmd="${1:?start|pause|continue|status}"; name="${2:?run name}"; shift 2
R="${RUNS:-runs}"
# The run starts the binary itself, not through cargo: the malloc settings of .cargo/config.toml's
# [env] (docs/results.md, "The allocator"), unless the caller gives their own.
export GLIBC_TUNABLES="${GLIBC_TUNABLES-$(sed -n 's/^GLIBC_TUNABLES = "\(.*\)"$/\1/p' .cargo/config.toml)}"
dir="$R/.marathon"; mkdir -p "$dir"
pidf="$dir/$name.pid"; log="$dir/$name.log"

# A finished run can linger as a zombie where nothing reaps it: that is not alive.
alive() {
  [ -f "$pidf" ] || return 1
  local st; st=$(ps -o stat= -p "$(cat "$pidf")" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "${st#Z}" = "$st" ]
}

case "$cmd" in
  start)
    if alive; then echo "$name is already running (pid $(cat "$pidf"))"; exit 1; fi
    kind="${1:?train kind, e.g. ib-inn}"; shift
    bin="$dir/$name-xtask"
    if [ -n "${KEEP_BINARY:-}" ] && [ -x "$bin" ]; then
      echo "$name: keeping $bin"
    else
      cp target/release/xtask "$bin"
    fi
    if compgen -G "$R/$name/checkpoints/*" >/dev/null; then
      args=(train "$kind" --runs-dir "$R" --name "$name" --resume "$@")
    else
      args=(train "$kind" --runs-dir "$R" --name "$name" "$@")
    fi
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
    if alive; then
      state=$(ps -o stat= -p "$(cat "$pidf")")
      echo "$name: running (pid $(cat "$pidf"), state $state)"
    else
      echo "$name: not running"
    fi
    [ -f "$log" ] && tail -n 5 "$log" | tr '\r' '\n' | tail -n 5
    [ -f "$R/$name/metrics.csv" ] && tail -n 1 "$R/$name/metrics.csv"
    ls "$R/$name/checkpoints" 2>/dev/null | tail -n 1
    ;;
  *) echo "unknown command $cmd"; exit 2 ;;
esac
