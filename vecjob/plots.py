"""PNG plots written beside outputs (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def plot_training_curves(history: list[dict], dest: str | Path) -> None:
    """Train/validation loss against epochs seen (one point per round), and KL when the variant has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epochs"] for h in history]
    has_kl = any(h.get("train_kl", 0) > 0 for h in history)
    fig, axes = plt.subplots(1, 2 if has_kl else 1, figsize=(10 if has_kl else 6, 4), squeeze=False)
    ax = axes[0][0]
    for key, label in [("train_loss", "train loss"), ("val_loss", "validation loss"),
                       ("train_recon", "train recon (nats/token)"), ("val_recon", "validation recon")]:
        ax.plot(epochs, [h.get(key, float("nan")) for h in history], marker="o", label=label)
    ax.set_xlabel("epochs seen")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if has_kl:
        ax = axes[0][1]
        ax.plot(epochs, [h.get("train_kl", 0) for h in history], marker="o", label="train KL")
        ax.plot(epochs, [h.get("val_kl", 0) for h in history], marker="o", label="validation KL")
        ax.set_xlabel("epochs seen")
        ax.set_ylabel("KL (nats / chunk)")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(dest, dpi=100)
    plt.close(fig)
