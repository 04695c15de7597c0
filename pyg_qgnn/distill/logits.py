r"""Logit matching (`Hinton et al., 2015 <https://arxiv.org/abs/1503.02531>`_),
the base distillation of binary GNNs (`Bahri et al., 2021
<https://arxiv.org/abs/2012.15823>`_: :math:`T = 3`, :math:`\alpha = 0.1`)."""
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn


def check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(
            temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"'temperature' must be a positive number "
                         f"(got {temperature!r})")
    return float(temperature)


def check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(
            alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"'alpha' must be a number in [0, 1] (got {alpha!r})")
    return float(alpha)


def logit_matching_loss(student_logits: Tensor, teacher_logits: Tensor,
                        temperature: float = 3.0) -> Tensor:
    r"""Kullback–Leibler divergence between the softened class
    distributions, scaled by :math:`T^2` so that its gradient keeps its
    size across temperatures:

    .. math::
        \mathcal{L}_{KD} = \frac{T^2}{B} \sum_{b=1}^{B}
        \mathrm{KL}\big(\mathrm{softmax}(\mathbf{z}^t_b / T) \,\Vert\,
        \mathrm{softmax}(\mathbf{z}^s_b / T)\big)

    Args:
        student_logits (torch.Tensor): :math:`(B, C)`.
        teacher_logits (torch.Tensor): :math:`(B, C)`.
        temperature (float, optional): :math:`T`. (default: :obj:`3.0`)
    """
    temperature = check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"'student_logits' and 'teacher_logits' must have "
                         f"the same shape (got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)})")
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_s, log_t, reduction='batchmean',
                                     log_target=True)


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor,
                      target: Tensor, temperature: float = 3.0,
                      alpha: float = 0.1,
                      label_smoothing: float = 0.0) -> Tensor:
    r"""The student's loss under logit matching:

    .. math::
        \mathcal{L} = (1 - \alpha)\,\mathrm{CE}(\mathbf{z}^s, y)
        + \alpha\,\mathcal{L}_{KD}

    with :math:`\mathcal{L}_{KD}` of :func:`logit_matching_loss`.

    Args:
        student_logits (torch.Tensor): :math:`(B, C)`.
        teacher_logits (torch.Tensor): :math:`(B, C)`.
        target (torch.Tensor): Class indices :math:`(B)`.
        temperature (float, optional): :math:`T`. (default: :obj:`3.0`)
        alpha (float, optional): :math:`\alpha`. (default: :obj:`0.1`)
        label_smoothing (float, optional): Of the cross-entropy term, see
            :func:`torch.nn.functional.cross_entropy`. (default: :obj:`0.0`)
    """
    alpha = check_alpha(alpha)
    hard = F.cross_entropy(student_logits, target,
                           label_smoothing=label_smoothing)
    soft = logit_matching_loss(student_logits, teacher_logits, temperature)
    return (1 - alpha) * hard + alpha * soft


class LogitMatching(nn.Module):
    r"""Module form of :func:`distillation_loss` (with a :obj:`target`) and
    :func:`logit_matching_loss` (without).

    Args:
        temperature (float, optional): :math:`T`. (default: :obj:`3.0`)
        alpha (float, optional): :math:`\alpha`. (default: :obj:`0.1`)
        label_smoothing (float, optional): Of the cross-entropy term.
            (default: :obj:`0.0`)

    Shapes:
        - **input:** student logits :math:`(B, C)`, teacher logits
          :math:`(B, C)`, targets :math:`(B)` *(optional)*
        - **output:** scalar
    """
    def __init__(self, temperature: float = 3.0, alpha: float = 0.1,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.alpha = check_alpha(alpha)
        self.label_smoothing = label_smoothing

    def forward(self, student_logits: Tensor, teacher_logits: Tensor,
                target: Optional[Tensor] = None) -> Tensor:
        if target is None:
            return logit_matching_loss(student_logits, teacher_logits,
                                       self.temperature)
        return distillation_loss(student_logits, teacher_logits, target,
                                 self.temperature, self.alpha,
                                 self.label_smoothing)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(temperature={self.temperature}, '
                f'alpha={self.alpha})')
