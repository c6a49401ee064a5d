# Diagnosis helpers (val only, never test). Sourced from the repository root by wave1.sh, laneA2.sh, laneB2.sh.
export DS_ACCELERATOR=cpu TRANSFORMERS_OFFLINE=1 HF_HUB_OFFLINE=1 TORCH_EXTENSIONS_DIR=$PWD/.venv/torch_extensions
PY=.venv/bin/python
D=$PWD/runs/diag && mkdir -p "$D"
TRUNK=$D/cnn/export/model.safetensors
cnn() {  # 400-step CNN stage, shared trunk
  $PY launcher/pretrain.py --config configs/tiny_cnn.json --set train.output_dir=\"$D/cnn\" \
    --set train.max_steps=400 --set train.eval_every=400 --set train.checkpoint_every=400 > $D/cnn.log 2>&1
}
pt() {  # pt NAME STEPS [--set ...]: MLM+ITM pre-training from the trunk
  local name=$1 steps=$2; shift 2
  $PY launcher/pretrain.py --config configs/tiny.json --set train.output_dir=\"$D/$name\" \
    --set train.max_steps=$steps --set train.eval_every=$steps --set data.micro_batch_size=24 \
    --set deepspeed.zero_optimization.stage=0 --set model.backbone_weights=\"$TRUNK\" --set model.frozen_bn=true \
    "$@" > $D/$name.log 2>&1
}
ft() {  # ft NAME INIT(or none) FRAC SEED STEPS [--set ...]: fine-tune, val at the end
  local name=$1 init=$2 frac=$3 seed=$4 steps=$5; shift 5
  local extra=()
  if [ "$init" = none ]; then extra=(--set model.backbone_weights=\"$TRUNK\"); else extra=(--init $D/$init/export); fi
  $PY launcher/finetune.py --task vqa --config configs/finetune/easyvqa.json "${extra[@]}" \
    --set model.frozen_bn=true --set train.output_dir=\"$D/ft_$name\" --set data.subset_fraction=$frac \
    --set train.seed=$seed --set train.max_steps=$steps --set train.eval_every=1000000 "$@" > $D/ft_$name.log 2>&1
  echo "$name: $(grep 'eval at step' $D/ft_$name.log | tail -1)" >> $D/results.txt
}
