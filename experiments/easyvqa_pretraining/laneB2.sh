cd "$(dirname "$0")/../.." && source experiments/easyvqa_pretraining/lib.sh
export OMP_NUM_THREADS=1
$PY launcher/evaluate.py --task vqa --checkpoint $D/ft_base_s0 --split val --out $D/ft_base_s0/eval_val > $D/ev_base.log 2>&1
$PY benchmarks/easyvqa_by_kind.py $D/ft_base_s0/eval_val/vqa_results.json > $D/kind_base_s0.txt
pt frzlo 500 --set train.freeze_cnn=true --set train.lr_transformer=0.0001
ft frzlo_s0 frzlo 0.02 0 150
