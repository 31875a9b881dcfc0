"""The paper's frozen-feature protocols: 1-nearest-neighbour retrieval (cosine on CLS features) and a linear probe."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .data import FixedScaleBatchSampler, VideoClipDataset, collate_clips
from .scales import Scale


@torch.no_grad()
def extract_features(model, dataset: VideoClipDataset, scale: Scale, batch_size: int = 8,
                     device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised CLS features (N, D) and labels (N,) of every readable video at one scale."""
    backbone = getattr(model, "stretchysnake", model).eval()
    features, labels = [], []
    loader = DataLoader(dataset, batch_sampler=FixedScaleBatchSampler(len(dataset), batch_size, scale),
                        collate_fn=collate_clips)
    for batch in loader:
        output = backbone(batch["pixel_values"].to(device), patch_size=batch["patch_size"])
        features.append(output.pooler_output.float().cpu())
        labels.append(batch["labels"])
    return torch.cat(features), torch.cat(labels)


def nearest_neighbour_accuracy(train_features, train_labels, test_features, test_labels) -> float:
    """Top-1 (%) of labelling each test clip with its most cosine-similar training clip."""
    similarity = F.normalize(test_features, dim=1) @ F.normalize(train_features, dim=1).T
    predicted = train_labels[similarity.argmax(1)]
    return 100 * (predicted == test_labels).float().mean().item()


def linear_probe_accuracy(train_features, train_labels, test_features, test_labels, num_labels: int,
                          steps: int = 300, weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Top-1 (%) of a logistic-regression head trained (full batch, L-BFGS) on frozen standardised features."""
    generator = torch.Generator().manual_seed(seed)
    mean, std = train_features.mean(0), train_features.std(0).clamp(min=1e-6)
    x_train, x_test = (train_features - mean) / std, (test_features - mean) / std
    head = torch.nn.Linear(x_train.shape[1], num_labels)
    torch.nn.init.normal_(head.weight, std=0.01, generator=generator)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(head(x_train), train_labels) + weight_decay * head.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return 100 * (head(x_test).argmax(1) == test_labels).float().mean().item()


def probe_scores(model, train_set: VideoClipDataset, test_set: VideoClipDataset, scale: Scale, num_labels: int,
                 batch_size: int = 8, device="cpu") -> dict[str, float]:
    train = extract_features(model, train_set, scale, batch_size, device)
    test = extract_features(model, test_set, scale, batch_size, device)
    return {"knn_top1": nearest_neighbour_accuracy(*train, *test),
            "linear_probe_top1": linear_probe_accuracy(*train, *test, num_labels)}
