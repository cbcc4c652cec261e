"""Cross Pseudo Supervision (Chen et al. 2021) with two U-Nets.

Two U-Nets of the same architecture start from different initialisations: each is built
under its own seed, drawn from torch's global RNG (so the pair depends only on the trial's
seed). Both are trained on ``0.5 (BCE + Dice)`` on labelled slices (SSL4MIS's supervised
loss) and, on every slice (``pseudo_on: all``, the paper) or on the unlabelled ones
(SSL4MIS), each by BCE against the other's hard pseudo-label ``1[p > 0.5]`` (binary argmax),
which carries no gradient. The weight ``alpha`` ramps up as Mean Teacher's. One optimiser
steps both networks (their losses share no parameter, so this equals two optimisers). With
C > 2 classes the pseudo-label is the argmax and the loss the categorical cross-entropy.
"""

from __future__ import annotations

import torch

from mismatch.losses import cross_entropy
from mismatch.methods.base import Batch, Method
from mismatch.methods.configs.cps import CPSConfig
from mismatch.methods.mean_teacher import sigmoid_rampup
from mismatch.methods.ua_mt import supervised_terms


def hard_pseudo_label(logits: torch.Tensor) -> torch.Tensor:
    """``1[sigmoid(logits) > 0.5]`` as float, detached (binary argmax; no gradient); for C
    channels the argmax class ``(B, 1, *spatial)``."""
    if logits.ndim > 1 and logits.shape[1] > 1:
        return logits.detach().argmax(dim=1, keepdim=True).to(logits.dtype)
    return (logits.detach() > 0).to(logits.dtype)


def cross_pseudo_losses(logits1: torch.Tensor, logits2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(CE(logits1, label of net 2), CE(logits2, label of net 1))`` (binary or categorical
    cross-entropy): each term's gradient reaches only the network whose logits it takes."""
    return (cross_entropy(logits1, hard_pseudo_label(logits2)),
            cross_entropy(logits2, hard_pseudo_label(logits1)))


class CPS(Method):
    """Two differently initialised U-Nets supervising each other with hard pseudo-labels."""

    config_class = CPSConfig
    config: CPSConfig

    def __init__(self, config: CPSConfig, in_channels: int, num_classes: int = 2, spatial_dims: int = 2) -> None:
        super().__init__(config, in_channels, num_classes, spatial_dims)
        seeds = torch.randint(0, 2**31 - 1, (2,)).tolist()
        if seeds[0] == seeds[1]:
            seeds[1] += 1
        self.net1 = self._seeded_unet(seeds[0])
        self.net2 = self._seeded_unet(seeds[1])

    def _seeded_unet(self, seed: int) -> torch.nn.Module:
        """A U-Net initialised under ``seed``, leaving the global RNG as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.build_net("unet")

    def consistency_weight(self, epoch: int) -> float:
        """The ramped lambda used in ``epoch`` (0-based)."""
        ramp = self.run_epochs if self.config.rampup_epochs is None else self.config.rampup_epochs
        return self.config.alpha * sigmoid_rampup(epoch, ramp)

    def training_step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        """0.5 (BCE + Dice) of each net on labelled slices (summed over the nets); ramped CPS terms."""
        logits1, logits2 = self.net1(batch.image)[0], self.net2(batch.image)[0]
        losses: dict[str, torch.Tensor] = {}
        lab = batch.lab
        if batch.n_labelled:
            terms1 = supervised_terms(logits1[lab], batch.label[lab])
            terms2 = supervised_terms(logits2[lab], batch.label[lab])
            losses.update({key: terms1[key] + terms2[key] for key in terms1})  # both networks
        pseudo = slice(None) if self.config.pseudo_on == "all" else batch.unl
        if self.config.pseudo_on == "all" or batch.n_unlabelled:
            cps1, cps2 = cross_pseudo_losses(logits1[pseudo], logits2[pseudo])
            weight = self.consistency_weight(epoch)
            losses["cps1"], losses["cps2"] = weight * cps1, weight * cps2
        losses["loss"] = sum(losses.values())
        return losses

    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        """Net 1's probability (``predict_with: net1``) or the two nets' mean."""
        if self.config.predict_with == "net1":
            return self.net1.probabilities(image)
        return 0.5 * (self.net1.probabilities(image) + self.net2.probabilities(image))

    def inference_parameters(self) -> int:
        """Parameters used at test time: one U-Net, or both for ``predict_with: mean``."""
        nets = [self.net1] if self.config.predict_with == "net1" else [self.net1, self.net2]
        return sum(p.numel() for net in nets for p in net.parameters())
