#!/usr/bin/env bash
# Every GPU measurement of the performance issue, in one device call.
#
# Here (the CPU machine), once per session:
#   bash ../shared/device/prepare.sh     # wheels in .whl/, ref_torch.py in .ref/
#   bash bench/device_session.sh --prepare_data   # phantom variants in .tfds/ (16 MB)
# Then one device call (carry .whl .ref .tfds), e.g. with timeout_s=590:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#     --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD \
#     && COMMIT=<git rev-parse --short HEAD here> bash bench/device_session.sh
# Then here: python bench/report.py <files_at>/*.log > the tables for
# docs/benchmarks.md.
#
# Stages run in priority order, each under `timeout`, and a stage that would
# start after BUDGET seconds (default 540) is skipped and recorded as such
# (rerun those in a later session with STAGES="..."),
# so the call ends inside the device's 10-minute limit with every finished
# stage's JSON lines in $OUT (medjax.log, reference.log; stages.log,
# stderr.log, env.txt, profile.log; report.md and prof.tar.gz, jax.profiler
# traces of the DCGAN and SRGAN steps). The 2026-11-26 H200 call ran every
# stage of the previous order but the last six in BUDGET=535 (a second,
# 2-minute call on the still-warm machine ran four of them). The PyTorch reference runs
# through bench/reference.py (ref_torch.py's own step builders and timer) in
# its own process, right after medjax's figure for the same workload, and only
# the modes the issue's "best" column comes from plus torch.compile for
# Inception: ref_torch.py's main() compiles every case (minutes).
#
# STAGES="srgan srgan_ref ...": run only the named stages (e.g. those a
# previous session's stages.log shows as skipped for budget).
# QUICK=1: tiny batches and steps, float32 reference only: a dry run of this
# script on a CPU, e.g. QUICK=1 REF=../shared/reference/ref_torch.py
# OUT=/tmp/dry bash bench/device_session.sh (needs torch; cv2 for opencv).
set -uo pipefail
cd "$(dirname "$0")/.."
TFDS_DIR=${TFDS_DIR:-$PWD/.tfds}
if [[ "${1:-}" == --prepare_data ]]; then
  # The pipeline stage's datasets, small enough to carry: the DCGAN config
  # resizes to 64 on load and SRGAN trains on 96x96 crops, so 64 and 96 px
  # phantoms give those configs the same batches as the 256 px default.
  exec python - "$TFDS_DIR" <<'EOF'
import sys
from medjax import config_lib
from medjax.data import pipeline
for name, size, train, test in (('dcgan_brain', 64, 2000, 400),
                                ('srgan_brain', 96, 1000, 16)):
  c = config_lib.load_config_file(f'configs/{name}.py')
  c.dataset.data_dir = sys.argv[1]
  c.dataset.image_size = size
  c.dataset.phantom.update(image_size=size, num_train=train, num_test=test)
  print(name, pipeline.load(c.dataset).images.shape)
EOF
fi

OUT=${OUT:-/tmp/medjax_bench}
BUDGET=${BUDGET:-540}
REF=${REF:-.ref/ref_torch.py}
QUICK=${QUICK:-0}
mkdir -p "$OUT"
rm -rf /tmp/medjax_prof
export PYTHONUNBUFFERED=1
# One compilation cache for the session: max_batch.py's probes at the batches
# train_step.py compiled first are then cache hits. compile_s of the first
# compile of each step is a real compile (the cache starts empty). With the
# cache on, jax (jax_persistent_cache_enable_xla_caches, default) also keeps
# XLA's autotuning results in it, so a variant of a program compiled before
# (other XLA_FLAGS, a profile) reuses its convolutions' algorithm choices: its
# compile_s is not a cold compile.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/medjax_jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
start=$SECONDS

if [[ $QUICK == 1 ]]; then
  DC_B=(8 16); SR_B=(2 4); INC_B=2; DEG_B=4; STEPS=1; WARM=0; CV_N=128
  MODES=(fp32_eager); INC_MODES=(fp32_eager); DTYPES=(float32)
  PIPE_DC=(--batch_size=8 --steps=1 --warmup=0 --host_batches=2)
  PIPE_SR=(--batch_size=2 --steps=1 --warmup=0 --host_batches=2)
  MAXB=(--probe 1 2 --multiple 1 --memory_limit_mb 2000 --max_batch 4
        --config.model.sr.num_blocks=1)
else
  # ref_degrade.py: 64 images a task, one task per core (16 on the host).
  DC_B=(128 1024); SR_B=(16 64); INC_B=256; DEG_B=256; STEPS=20; WARM=3
  CV_N=1024
  MODES=(fp32_eager bf16_cl_eager)
  INC_MODES=(fp32_eager bf16_cl_eager bf16_cl_compile)
  DTYPES=(float32 bfloat16)
  PIPE_DC=(--batch_size=128 --steps=20 --warmup=3 --repeats=2
           --host_batches=200)
  PIPE_SR=(--batch_size=16 --steps=20 --warmup=3 --repeats=2
           --host_batches=200)
  MAXB=()
fi

# stage NAME LOG LIMIT_S CMD...: runs CMD under timeout (limited to what is
# left of BUDGET), appending stdout to $OUT/LOG.
stage() {
  local name=$1 log=$2 limit=$3; shift 3
  if [[ -n "${STAGES:-}" && " $STAGES " != *" $name "* ]]; then
    return
  fi
  local left=$((BUDGET - (SECONDS - start)))
  if ((left < 15)); then
    echo "{\"stage\": \"$name\", \"skipped\": \"budget\", \"t_s\": $((SECONDS - start))}" | tee -a "$OUT/stages.log"
    return
  fi
  ((limit > left)) && limit=$left
  local t0=$SECONDS
  echo "== $name (limit ${limit}s) at t=$((SECONDS - start))s" >> "$OUT/stderr.log"
  timeout "$limit" "$@" >> "$OUT/$log" 2>> "$OUT/stderr.log"
  local rc=$?
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0)), \"t_s\": $((SECONDS - start))}" | tee -a "$OUT/stages.log"
}

{
  date -u; nvidia-smi 2>&1 | head -15
  python3 -c 'import jax, flax, optax, torch; print("jax", jax.__version__, jax.devices(), "flax", flax.__version__, "optax", optax.__version__, "torch", torch.__version__)' 2>&1
  echo "XLA_FLAGS=${XLA_FLAGS:-} XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-}"
  echo "commit ${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}"
} > "$OUT/env.txt" 2>&1

TS=(python3 bench/train_step.py --steps=$STEPS --warmup=$WARM --dtypes "${DTYPES[@]}")
REFPY=(python3 bench/reference.py --ref="$REF" --steps=$STEPS --warmup=$WARM)

# Order, most wanted first, so that a budget cut loses the least: the
# paper batches (DCGAN 128, SRGAN 16), each beside its reference and then
# as one CUDA graph per step (DCGAN's also under the 'cudnn' conv rule),
# with the real SRGAN feed in front of the graph step; InceptionV3 plain
# and folded, beside torch.compile; traces of the paper-batch steps and of
# InceptionV3; the convolutions as GEMMs at the paper batches; D's passes
# as two calls (the check on a default); the large batches (DCGAN's also
# under 'cudnn'), then as graphs; the other A/B levers; the GEMM SRGAN
# step's trace; the default pipelines; degradations; the conv forms; the
# largest batch.
stage dcgan_small medjax.log 90 "${TS[@]}" --config=configs/dcgan_brain.py --batch_size "${DC_B[0]}"
stage dcgan_small_ref reference.log 40 "${REFPY[@]}" --case=dcgan64 --batch_size "${DC_B[0]}" --modes "${MODES[@]}"
# Every command in CUDA graphs, cuDNN convolutions included
# (--xla_gpu_enable_command_buffer=+CONVOLUTION): the whole step becomes one
# graph launch. Compiled here for the H200 with its driver's version in the
# target config (bench/h200.txtpb; without it XLA drops traced commands from
# graphs, which is why the 2026-11-26 note said the convolutions stay out),
# every medjax program is 1 launch instead of 81-96 (DCGAN), 390-457 (SRGAN)
# or ~300 (InceptionV3). The paper-batch steps are launch-bound (the host
# loop took 11.0 of SRGAN b16's 11.2 ms), so this is the lever for them and
# for the SRGAN real pipeline; each against the stage of the same step
# without the flags (dcgan_small, dcgan_cudnn, srgan_small).
GRAPHS="--xla_gpu_enable_command_buffer=+CONVOLUTION --xla_gpu_graph_min_graph_size=1"
stage graphs_dcgan medjax.log 120 env XLA_FLAGS="${XLA_FLAGS:-} $GRAPHS" \
  "${TS[@]}" --config=configs/dcgan_brain.py --batch_size "${DC_B[0]}" --conv_forms auto cudnn
# DCGAN under MEDJAX_CONV_FORMS=cudnn (medjax/models/conv.py, 2026-12-06):
# each transposed convolution as the adjoint of a strided one (forward:
# cuDNN's backward-data call; dW: its backward-filter call, not k*k taps),
# the rest as the GPU rule has them. H200 program bound 1.51 -> 1.23 ms
# (float32), launches 97 -> 89. Against dcgan_small (the default); the
# large batch later, also under 'cudnn_dw', the adjoint's dW alone (the
# fallback, should the backward-data forward be slow; at this batch the fit
# in bench/NOTES.md gives it no gain).
stage dcgan_cudnn medjax.log 90 "${TS[@]}" --config=configs/dcgan_brain.py --batch_size "${DC_B[0]}" --conv_forms cudnn
stage srgan_small medjax.log 120 "${TS[@]}" --config=configs/srgan_brain.py --batch_size "${SR_B[0]}"
stage srgan_small_ref reference.log 50 "${REFPY[@]}" --case=srgan_x4_96 --batch_size "${SR_B[0]}" --modes "${MODES[@]}"
stage graphs_srgan medjax.log 100 env XLA_FLAGS="${XLA_FLAGS:-} $GRAPHS" \
  "${TS[@]}" --config=configs/srgan_brain.py --batch_size "${SR_B[0]}"
# The real SRGAN feed in front of the one-launch step: the host is then free
# while the device runs, so the feed's 0.85 ms per step should hide.
stage pipeline_srgan_graphs medjax.log 70 env XLA_FLAGS="${XLA_FLAGS:-} $GRAPHS" \
  python3 bench/pipeline.py --config=configs/srgan_brain.py "${PIPE_SR[@]}" \
  --config.dataset.data_dir="$TFDS_DIR" --config.dataset.image_size=96 \
  --config.dataset.phantom.image_size=96 --config.dataset.phantom.num_train=1000 --config.dataset.phantom.num_test=16
stage inception medjax.log 70 python3 bench/metrics.py --cases inception_fid --inception_batch=$INC_B --dtypes "${DTYPES[@]}" --iters=$STEPS --warmup=$WARM
# The same with each BatchNorm folded into its convolution (conv + bias +
# ReLU, which XLA can give cuDNN as one fused call; a per-channel scale after
# the convolution it cannot): against the rows just above.
stage inception_fold medjax.log 70 python3 bench/metrics.py --cases inception_fid --inception_batch=$INC_B --dtypes "${DTYPES[@]}" --iters=$STEPS --warmup=$WARM --inception_fold_bn on
# Its reference, torch.compile the goal's figure (slow to compile: 120 s),
# beside it: medjax's InceptionV3 calls no longer copy the weights to the
# device each time (2026-12-06), so this pair decides that goal.
stage inception_ref reference.log 120 "${REFPY[@]}" --case=inception_fid --batch_size $INC_B --modes "${INC_MODES[@]}"
# Traces (bench/trace_summary.py reads prof.tar.gz here): DCGAN and SRGAN
# steps (compiles are cache hits of the stages above; XLA runs graphs
# kernel by kernel under the profiler, so these show each kernel) and
# InceptionV3 in bfloat16: early, since no GPU trace has come back yet and
# every open goal's next step depends on where the device time goes.
stage profile profile.log 60 "${TS[@]}" --dtypes float32 --steps=2 --warmup=1 \
  --config=configs/dcgan_brain.py --batch_size "${DC_B[0]}" --profile_dir /tmp/medjax_prof
stage profile_srgan profile.log 60 "${TS[@]}" --dtypes float32 --steps=2 --warmup=1 \
  --config=configs/srgan_brain.py --batch_size "${SR_B[0]}" --profile_dir /tmp/medjax_prof
stage profile_inception profile.log 60 python3 bench/metrics.py --cases inception_fid \
  --inception_batch=$INC_B --dtypes "${DTYPES[-1]}" --iters=2 --warmup=1 --profile_dir /tmp/medjax_prof
# Packed now, so that a later cut keeps them; the trace JSON and HLO only:
# the xplane.pb files (trace_summary.py does not read them) could push the
# archive past the 16 MB a returned file may have.
[[ -d /tmp/medjax_prof ]] && tar czf "$OUT/prof.tar.gz" --exclude="*.xplane.pb" -C /tmp medjax_prof
# Convolutions as products of their patches where those fit 32 MB
# (MEDJAX_CONV_FORMS=gemm, medjax/models/conv.py): Triton GEMMs, which XLA
# puts into its CUDA graphs with the kernels around them, instead of cuDNN
# calls it launches one by one. H100 program (bench/gpu_hlo.py): SRGAN b16
# 438 -> 144 host launches per step (bf16 450 -> 96), DCGAN b128 97 -> 60
# (bf16 95 -> 43). Against srgan_small and dcgan_small; the large batches
# later. After the graph stages: with every command in one graph, fewer
# launches is no longer their case, only if the graphs fail.
# float32 first (the goals still open), each dtype a stage of its own: XLA
# autotunes every new Triton GEMM, so these compiles may take longer.
stage convs_gemm medjax.log 120 "${TS[@]}" --dtypes "${DTYPES[0]}" --conv_forms gemm \
  --config=configs/srgan_brain.py --batch_size "${SR_B[0]}"
stage convs_gemm_dcgan medjax.log 70 "${TS[@]}" --dtypes "${DTYPES[0]}" --conv_forms gemm \
  --config=configs/dcgan_brain.py --batch_size "${DC_B[0]}"
# The SRGAN feed in front of the 'gemm' step (convs_gemm): with its
# launches in CUDA graphs the step should no longer be host-bound, so the
# real feed's 0.85 ms of host time per step can hide behind it.
stage pipeline_srgan_gemm medjax.log 70 env MEDJAX_CONV_FORMS=gemm python3 bench/pipeline.py \
  --config=configs/srgan_brain.py "${PIPE_SR[@]}" \
  --config.dataset.data_dir="$TFDS_DIR" --config.dataset.image_size=96 \
  --config.dataset.phantom.image_size=96 --config.dataset.phantom.num_train=1000 --config.dataset.phantom.num_test=16
# D's real and fake passes as two calls (gan.one_d_call=False, the reference's
# way and medjax's before 2026-11-26) against the one call on [real; fake]
# that srgan_small and dcgan_small timed: the H100 program has 14 (DCGAN) and 23
# (SRGAN) fewer convolution launches per step (bench/gpu_hlo.py).
stage two_d_calls medjax.log 60 "${TS[@]}" --dtypes float32 --config.gan.one_d_call=False \
  --config=configs/srgan_brain.py --batch_size "${SR_B[0]}"
stage two_d_calls_dcgan medjax.log 40 "${TS[@]}" --dtypes float32 --config.gan.one_d_call=False \
  --config=configs/dcgan_brain.py --batch_size "${DC_B[0]}"
# The large batches beside their references, and as GEMMs where patches fit.
stage dcgan_large medjax.log 90 "${TS[@]}" --config=configs/dcgan_brain.py --batch_size "${DC_B[@]:1}"
stage dcgan_large_ref reference.log 40 "${REFPY[@]}" --case=dcgan64 --batch_size "${DC_B[@]:1}" --modes "${MODES[@]}"
stage dcgan_cudnn_large medjax.log 120 "${TS[@]}" --config=configs/dcgan_brain.py --batch_size "${DC_B[@]:1}" --conv_forms cudnn cudnn_dw
stage srgan_large medjax.log 120 "${TS[@]}" --config=configs/srgan_brain.py --batch_size "${SR_B[@]:1}"
stage srgan_large_ref reference.log 50 "${REFPY[@]}" --case=srgan_x4_96 --batch_size "${SR_B[@]:1}" --modes "${MODES[@]}"
stage graphs_large medjax.log 120 env XLA_FLAGS="${XLA_FLAGS:-} $GRAPHS" \
  "${TS[@]}" --config=configs/dcgan_brain.py --batch_size "${DC_B[@]:1}" --conv_forms cudnn
stage graphs_srgan_large medjax.log 100 env XLA_FLAGS="${XLA_FLAGS:-} $GRAPHS" \
  "${TS[@]}" --dtypes "${DTYPES[0]}" --config=configs/srgan_brain.py --batch_size "${SR_B[@]:1}"
# Inside one graph each kernel still costs its own few microseconds
# (report.py's "cost per kernel" table reads that from the graph rows), so
# the levers that cut kernels count again there: BatchNorm fused and the
# kernels kept OHWI together, with DCGAN under 'cudnn', one launch each
# (H200 programs compiled here, 2026-12-07: DCGAN b128 fp32 245 -> 194
# kernels, bound 1.23 -> 1.15 ms; b1024 bf16 255 -> 218, 4.67 -> 4.48;
# SRGAN fp32 b16 1,122 -> 801, b64 1,127 -> 807, 10.83 -> 10.61 ms).
# Against graphs_dcgan, graphs_large and graphs_srgan(_large): the open
# goals' dtypes (DCGAN both at 1024, float32 at 128; SRGAN float32).
stage graphs_fewest_dcgan medjax.log 120 env XLA_FLAGS="${XLA_FLAGS:-} $GRAPHS" \
  "${TS[@]}" --config=configs/dcgan_brain.py --batch_size "${DC_B[@]}" --conv_forms cudnn \
  --batchnorm fused --config.state_kernel_layout=ohwi
stage graphs_fewest_srgan medjax.log 120 env XLA_FLAGS="${XLA_FLAGS:-} $GRAPHS" \
  "${TS[@]}" --dtypes "${DTYPES[0]}" --config=configs/srgan_brain.py --batch_size "${SR_B[@]}" \
  --batchnorm fused --config.state_kernel_layout=ohwi
stage convs_gemm_large medjax.log 100 "${TS[@]}" --conv_forms gemm \
  --config=configs/srgan_brain.py --batch_size "${SR_B[@]:1}"
stage convs_gemm_dcgan_large medjax.log 60 "${TS[@]}" --conv_forms gemm \
  --config=configs/dcgan_brain.py --batch_size "${DC_B[@]:1}"
# The paper batches as GEMMs in bfloat16 (both goals met there already;
# QUICK=1 has no bfloat16, hence the guards).
((${#DTYPES[@]} > 1)) && stage convs_gemm_bf16 medjax.log 100 "${TS[@]}" --dtypes "${DTYPES[@]:1}" --conv_forms gemm \
  --config=configs/srgan_brain.py --batch_size "${SR_B[0]}"
((${#DTYPES[@]} > 1)) && stage convs_gemm_dcgan_bf16 medjax.log 60 "${TS[@]}" --dtypes "${DTYPES[@]:1}" --conv_forms gemm \
  --config=configs/dcgan_brain.py --batch_size "${DC_B[0]}"
# medjax.models.norm.BatchNorm (MEDJAX_BATCHNORM=fused) against nn.BatchNorm,
# the default srgan_small and dcgan_small timed: its statistics and their backward
# pass are one reduction each; the H100 program has 16-19% fewer kernels per
# step (bench/gpu_hlo.py: SRGAN b16 1,191 -> 1,004, DCGAN b128 347 -> 282)
# but 10-22% more launches from the host (CUDA graphs capture fewer).
stage batchnorm_fused medjax.log 60 "${TS[@]}" --dtypes float32 --batchnorm fused \
  --config=configs/srgan_brain.py --batch_size "${SR_B[0]}"
stage batchnorm_fused_dcgan medjax.log 40 "${TS[@]}" --dtypes float32 --batchnorm fused \
  --config=configs/dcgan_brain.py --batch_size "${DC_B[0]}"
# CUDA graphs off for SRGAN (DCGAN b128 on the H200: no change): whether
# XLA's graphs of the kernels between convolutions help the SRGAN step.
stage graphs_off medjax.log 60 env XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=" \
  "${TS[@]}" --dtypes float32 --config=configs/srgan_brain.py --batch_size "${SR_B[0]}"
# The train state passed to the step as one flat array per dtype
# (config.pack_state, medjax/packing.py) instead of 542 (SRGAN) or 89 (DCGAN)
# arrays: each costs the host 1.3-2.5 us per call on a CPU, and the paper-batch
# steps are host-bound. Against srgan_small's and dcgan_small's rows.
stage pack_state medjax.log 60 "${TS[@]}" --dtypes float32 --pack_state on \
  --config=configs/srgan_brain.py --batch_size "${SR_B[0]}"
stage pack_state_dcgan medjax.log 40 "${TS[@]}" --dtypes float32 --pack_state on \
  --config=configs/dcgan_brain.py --batch_size "${DC_B[0]}"
# Convolution kernels kept in cuDNN's OHWI layout between steps
# (config.state_kernel_layout): in the H100 program (bench/gpu_hlo.py) 154
# fewer kernels per SRGAN b16 step (1,191 -> 1,037), 15 fewer for DCGAN b128.
stage kernels_ohwi medjax.log 60 "${TS[@]}" --dtypes float32 --config.state_kernel_layout=ohwi \
  --config=configs/srgan_brain.py --batch_size "${SR_B[0]}"
stage kernels_ohwi_dcgan medjax.log 40 "${TS[@]}" --dtypes float32 --config.state_kernel_layout=ohwi \
  --config=configs/dcgan_brain.py --batch_size "${DC_B[0]}"
# SRGAN b64 under a 128 MB bound: 140 launches instead of 390, but its
# roofline rises 10.8 -> 14.8 ms on the H200 (bench/NOTES.md, 2026-12-06:
# likely no gain), so after the other levers.
stage convs_gemm_large_128mb medjax.log 60 env MEDJAX_CONV_GEMM_MB=128 "${TS[@]}" \
  --dtypes float32 --conv_forms gemm --config=configs/srgan_brain.py --batch_size "${SR_B[@]:1}"
# The 'gemm' SRGAN step with its CUDA graphs kept under the profiler (XLA
# otherwise runs them kernel by kernel while a trace is taken; XLA's code
# notes a memory-corruption risk, hence its own stage, after the others).
stage profile_srgan_gemm profile.log 70 env XLA_FLAGS="${XLA_FLAGS:-} --xla_enable_command_buffers_during_profiling=true" \
  "${TS[@]}" --dtypes float32 --steps=2 --warmup=1 --conv_forms gemm \
  --config=configs/srgan_brain.py --batch_size "${SR_B[0]}" --profile_dir /tmp/medjax_prof/gemm
[[ -d /tmp/medjax_prof ]] && tar czf "$OUT/prof.tar.gz" --exclude="*.xplane.pb" -C /tmp medjax_prof
stage pipeline_dcgan medjax.log 60 python3 bench/pipeline.py --config=configs/dcgan_brain.py "${PIPE_DC[@]}" \
  --config.dataset.data_dir="$TFDS_DIR" --config.dataset.phantom.image_size=64
stage pipeline_srgan medjax.log 70 python3 bench/pipeline.py --config=configs/srgan_brain.py "${PIPE_SR[@]}" \
  --config.dataset.data_dir="$TFDS_DIR" --config.dataset.image_size=96 \
  --config.dataset.phantom.image_size=96 --config.dataset.phantom.num_train=1000 --config.dataset.phantom.num_test=16
stage degradations medjax.log 40 python3 bench/degradations.py --batch_size $DEG_B --steps=$STEPS --warmup=$WARM
stage opencv reference.log 30 env N=$CV_N python3 "$(dirname "$REF")/ref_degrade.py"
# medjax's conv forms (medjax/models/conv.py): plain lax and the CPU rule
# against the GPU rule that dcgan_small timed.
stage conv_forms medjax.log 60 "${TS[@]}" --config=configs/dcgan_brain.py --batch_size "${DC_B[0]}" --conv_forms off on
# The largest SRGAN batch, from XLA's memory analysis alone: compiled without
# cuDNN autotuning (seconds, not a minute, per compile), and not run (a step
# without autotuned algorithms ran 130x slower on an H200, 2026-11-26).
stage max_batch medjax.log 150 env XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0" \
  python3 bench/max_batch.py --config=configs/srgan_brain.py --dtypes "${DTYPES[@]}" \
  --run_steps 0 --max_extra_compiles 3 "${MAXB[@]}"

# The device's copy of the tree may have no .git: COMMIT=<hash> names it.
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
# (A STAGES run may have written only one of the logs.)
LOGS=(); for f in "$OUT/reference.log" "$OUT/medjax.log"; do [[ -f $f ]] && LOGS+=("$f"); done
python3 bench/report.py --commit "$COMMIT" "${LOGS[@]}" > "$OUT/report.md" 2>> "$OUT/stderr.log"
echo "total ${SECONDS}s"
cat "$OUT/stages.log" "$OUT/report.md"
