#!/usr/bin/env bash
# Issue 7 on the GPU machine, time-boxed (after `bash bench/gpu/setup.sh`): the explained CNN,
# the full-size DCGAN on MNIST, its encoder for the pair, C3LT's maps for the pair, then the
# time per counterfactual of C3LT, GB and diffeo over the GAN on the same test images.
#   bash bench/gpu/c3lt.sh PAIR GAN_SECONDS ENC_SECONDS C3LT_SECONDS
# Each training stage runs until its time is up; the epochs it finished are kept (a checkpoint
# per epoch) and the run is then closed with `--resume --epochs <done>`, which only writes the
# final files. The log and the finished runs land in $OUT: runs.tar without the generator,
# which is dcgan-generator.mpk (copy it into runs/{dcgan,enc,c3lt}/generator.mpk).
set -uo pipefail
pair="${1:-4,9}"; gan_s="${2:-120}"; enc_s="${3:-40}"; c3lt_s="${4:-60}"
# X, BACKEND and R may be set to rehearse the script on the CPU; SMOKE=1 trains tiny models.
X="${X:-.gpu/xtask-cuda}"
B=(--backend "${BACKEND:-cuda}")
R="${R:-runs}"
S=(); L=(); W=()
if [ -n "${SMOKE:-}" ]; then S=(--small); L=(--train-limit 256 --test-limit 64); fi
# WIDTH narrows the DCGAN (ngf = ndf), for the CPU; EXPLAIN_N sets the timed test images.
# GAN_ON_PAIR=1 trains the DCGAN on the pair's images only (the reference: all of MNIST).
if [ -n "${WIDTH:-}" ]; then W=(--width "$WIDTH"); fi
if [ -n "${GAN_ON_PAIR:-}" ]; then W+=(--classes "$pair"); fi
# DATASET picks the data of every stage (default mnist; fashion-mnist reads the Debian package's
# /usr/share/datasets/fashion-mnist, or DATA_DIR). EXPLAIN_METHODS narrows the timed methods.
D=(--dataset "${DATASET:-mnist}")
if [ -n "${DATA_DIR:-}" ]; then D+=(--data-dir "$DATA_DIR"); fi
n="${EXPLAIN_N:-100}"
log="$OUT/c3lt-log.txt"
say() { echo "== $*" | tee -a "$log"; }

# boxed SECONDS RUN EPOCHS KIND ARGS…: `train KIND ARGS…` for at most SECONDS, then closes the
# run with the epochs done (a resumed run takes no flags but --epochs: it keeps its config).
# Rerunning the script keeps finished stages and resumes an interrupted one.
boxed() {
  local secs="$1" run="$2" epochs="$3" kind="$4"; shift 4
  local d="$R/$run"
  if [ -f "$d/model.toml" ]; then say "$run: finished before, kept"; return 0; fi
  local resume=(--runs-dir "$R" --name "$run" --resume)
  if [ -f "$d/metrics.csv" ]; then
    timeout --signal=INT "$secs" "$X" train "$kind" "${B[@]}" "${resume[@]}" --epochs "$epochs" >>"$log" 2>&1
  else
    rm -rf "$d"
    timeout --signal=INT "$secs" "$X" train "$kind" "$@" --epochs "$epochs" "${B[@]}" --runs-dir "$R" --name "$run" >>"$log" 2>&1
  fi
  local rc=$?
  local done=0
  [ -f "$d/metrics.csv" ] && done=$(( $(wc -l < "$d/metrics.csv") - 1 ))
  say "$run: exit $rc after $done epochs"
  if [ ! -f "$d/model.toml" ] && [ "$done" -gt 0 ]; then
    "$X" train "$kind" "${B[@]}" "${resume[@]}" --epochs "$done" >>"$log" 2>&1
    say "$run closed: exit $?"
  fi
  [ -f "$d/model.toml" ]
}

# CLS_ARCH=c3lt trains the network seed 003 explains instead of Paper 4's CNN (`train classifier --arch`).
# CLASSIFIER=<run> explains a classifier trained before (one per dataset serves every pair):
# it is copied in as $R/cls instead of training one.
if [ -n "${CLASSIFIER:-}" ]; then
  [ -f "$CLASSIFIER/model.toml" ] || { say "CLASSIFIER=$CLASSIFIER is not a finished classifier run"; exit 1; }
  mkdir -p "$R" && rm -rf "$R/cls" && cp -r "$CLASSIFIER" "$R/cls" && say "classifier: copied from $CLASSIFIER"
else
  say "classifier"
  boxed "${CLS_S:-60}" cls 5 classifier "${D[@]}" --arch "${CLS_ARCH:-paper4}" "${S[@]}" "${L[@]}" || exit 1
fi
say "dcgan"
boxed "$gan_s" dcgan 25 dcgan "${D[@]}" "${W[@]}" "${S[@]}" "${L[@]}" || exit 1
say "gan-encoder --classes $pair"
boxed "$enc_s" enc 10 gan-encoder "${D[@]}" --gan "$R/dcgan" --classes "$pair" "${S[@]}" "${L[@]}" || exit 1
say "c3lt --pair $pair"
boxed "$c3lt_s" c3lt 200 c3lt "${D[@]}" --pair "$pair" --classifier "$R/cls" --gan "$R/dcgan" \
  --encoder "$R/enc" "${L[@]}" || exit 1
tail -n 3 "$R/c3lt/metrics.csv" | tee -a "$log"

# Seconds per counterfactual, side by side on the same first test images of the pair. The
# evaluation suite is not here, so this times `explain` (one batch of all of them) per method.
# IBINN=<run> adds ECINN on that IB-INN (it explains the IB-INN itself, not the CNN).
methods="${EXPLAIN_METHODS:-c3lt gb diffeo}"
if [ -n "${IBINN:-}" ]; then methods="$methods ecinn"; fi
for m in $methods; do
  model="$R/cls"
  case $m in
    c3lt) extra=(--c3lt "$R/c3lt") ;;
    diffeo) extra=(--generator "$R/dcgan") ;;
    ecinn) extra=(); model="$IBINN" ;;
    *) extra=() ;;
  esac
  say "explain $m"
  timeout "${EXPLAIN_S:-45}" "$X" explain --method "$m" --model "$model" "${extra[@]}" --all-test --limit "$n" \
    --target random --batch-size "$n" --out "/tmp/explain-$m" "${B[@]}" 2>&1 | tail -n 2 | tee -a "$log"
done
# Under 16 MB a file: the generator (in three runs, the same bytes) travels once.
tar -cf "$OUT/runs.tar" --exclude=checkpoints --exclude=generator.mpk "$R/cls" "$R/dcgan" "$R/enc" "$R/c3lt"
cp "$R/dcgan/generator.mpk" "$OUT/dcgan-generator.mpk" 2>/dev/null
ls -la "$OUT" | tee -a "$log"
