"""Training: the chapter's recipe, run folders, distributed training, the speedrun."""
