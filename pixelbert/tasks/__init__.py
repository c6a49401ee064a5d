"""One module per task (pretrain, vqa, nlvr2, retrieval), one interface: tasks.base.Task."""
