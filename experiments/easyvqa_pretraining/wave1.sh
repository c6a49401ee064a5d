cd "$(dirname "$0")/../.." && source experiments/easyvqa_pretraining/lib.sh
test -f runs/data/easyvqa_captions/manifest.json || $PY -m data_pipeline.build_shards --dataset easyvqa --out runs/data/easyvqa_captions --no-progress > $D/build.log 2>&1
date > $D/wave1.time
cnn
date >> $D/wave1.time
export OMP_NUM_THREADS=1
( ft np_s0 none 0.02 0 150; pt frz 500 --set train.freeze_cnn=true; ft frz_s0 frz 0.02 0 150 ) &
( pt base 500; ft base_s0 base 0.02 0 150 ) &
wait
date >> $D/wave1.time
