cd "$(dirname "$0")/../.." && source experiments/easyvqa_pretraining/lib.sh
export OMP_NUM_THREADS=1
$PY launcher/evaluate.py --task vqa --checkpoint $D/ft_frz_s0 --split val --out $D/ft_frz_s0/eval_val > $D/ev_frz.log 2>&1
$PY benchmarks/easyvqa_by_kind.py $D/ft_frz_s0/eval_val/vqa_results.json > $D/kind_frz_s0.txt
pt frz150 150 --set train.freeze_cnn=true
ft frz150_s0 frz150 0.02 0 150
