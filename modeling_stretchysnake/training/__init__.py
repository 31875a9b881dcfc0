"""The training side of StretchySnake: the Trainer subclass, the five variants' scale samplers, datasets and batch
samplers, compute budgets, probes, reports and plots, generated data, distributed set-up and the `video_accuracy`
evaluate module. It imports the model files; they never import it. Needs the `train` extra (datasets, accelerate,
evaluate, pyyaml, matplotlib, tqdm)."""
