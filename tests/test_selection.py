import torch

from pyg_qgnn.selection import Selection


def test_selection_keeps_to_admissible_epochs():
    model = torch.nn.Linear(2, 2)
    selection = Selection(admissible=lambda m: bool(m.bias[0] > 0))
    offers = [(-1.0, 0.9), (1.0, 0.5), (-1.0, 0.95), (2.0, 0.6), (3.0, 0.6)]
    chosen = []
    for epoch, (bias, score) in enumerate(offers, 1):
        with torch.no_grad():
            model.bias.fill_(bias)
        chosen.append(selection.offer(model, score, epoch))
    # Epoch 1 is best until an admissible one appears; inadmissible epochs
    # never win afterwards, however good; ties keep the first.
    assert chosen == [True, True, False, True, False]
    assert (selection.epoch, selection.score) == (4, 0.6)
    assert float(selection.state['bias'][0]) == 2.0
    selection.restore(model)
    assert float(model.bias.detach()[0]) == 2.0


def test_any_score_can_be_selected_and_nothing_offered_restores_nothing():
    model = torch.nn.Linear(2, 2)
    before = model.weight.detach().clone()
    assert Selection().restore(model) is model
    assert torch.equal(model.weight, before)
    selection = Selection()
    assert selection.offer(model, -5.0, 1)  # e.g. a negative loss-based score
    assert not selection.offer(model, -6.0, 2)
    assert selection.epoch == 1
