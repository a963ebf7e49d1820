import numpy as np
import pytest
import torch

from sedlib.eval.metrics import accuracy
from sedlib.eval.protocols import (
    PROTOCOLS,
    check_class_subset,
    check_protocol,
    faithful_member_predictions,
    faithful_vote,
    standard_logits,
)

# 3 members, 4 samples, C = 6 classes; the subset is classes [1, 3, 4] (positions 0, 1, 2).
MASK = torch.tensor([1, 3, 4])
LOGITS = torch.tensor(
    [
        # member 0
        [
            [0.0, 9, 0, 0, 0, 0],  # argmax 1 -> position 0
            [0.0, 3, 0, 0, 0, 0],  # argmax 1 -> position 0
            [4.0, 1, 0, 0, 0, 0],  # argmax 0 -> outside
            [0.0, 1, 0, 0, 0, 6],  # argmax 5 -> outside
        ],
        # member 1
        [
            [0.0, 0, 0, 2, 0, 0],  # argmax 3 -> position 1
            [0.0, 0, 0, 0, 3, 0],  # argmax 4 -> position 2
            [0.0, 0, 4, 0, 2, 0],  # argmax 2 -> outside
            [0.0, 1, 0, 0, 0, 6],  # argmax 5 -> outside
        ],
        # member 2
        [
            [0.0, 0, 0, 2, 0, 0],  # argmax 3 -> position 1
            [5.0, 0, 0, 0, 4, 0],  # argmax 0 -> outside
            [0.0, 0, 0, 0, 0, 4],  # argmax 5 -> outside
            [0.0, 0, 0, 3, 0, 0],  # argmax 3 -> position 1
        ],
    ]
)
LABELS = np.array([1, 2, 2, 1])  # subset positions


def test_member_predictions_map_the_full_argmax_into_the_subset():
    expected = [[0, 0, -1, -1], [1, 2, -1, -1], [1, -1, -1, 1]]
    assert faithful_member_predictions(LOGITS, MASK).tolist() == expected


def test_vote_discards_out_of_subset_votes_breaks_ties_low_and_gives_minus_one_without_votes():
    votes = faithful_vote(faithful_member_predictions(LOGITS, MASK), num_classes=3)
    # sample 0: votes {1, 1, 0} -> 1; sample 1: {0, 2} tie -> 0; sample 2: no vote -> -1;
    # sample 3: two out-of-subset votes for class 5 are discarded, one vote for position 1 wins
    assert votes.tolist() == [1, 0, -1, 1]
    assert votes.dtype == torch.long


def test_vote_differs_from_the_restricted_logit_ensemble():
    restricted = standard_logits(LOGITS, MASK)
    assert restricted.shape == (3, 4, 3)
    assert restricted[0, 0].tolist() == [9.0, 0.0, 0.0] and restricted[2, 1].tolist() == [0.0, 0.0, 4.0]
    # mean restricted logits: s0 [3, 4/3, 0], s1 [1, 0, 7/3], s2 [1/3, 0, 2/3], s3 [2/3, 1, 0]
    assert restricted.mean(dim=0).argmax(dim=-1).tolist() == [0, 2, 2, 1]


def test_member_and_ensemble_accuracy_under_both_protocols():
    faithful = faithful_member_predictions(LOGITS, MASK).numpy()
    assert [accuracy(p, LABELS) for p in faithful] == [0.0, 0.5, 0.5]
    vote = faithful_vote(torch.as_tensor(faithful), 3).numpy()
    assert accuracy(vote, LABELS) == 0.5  # right on samples 0 and 3; the -1 of sample 2 is wrong
    standard = standard_logits(LOGITS, MASK).argmax(dim=-1).numpy()
    assert standard.tolist() == [[0, 0, 0, 0], [1, 2, 2, 0], [1, 2, 0, 1]]
    assert [accuracy(p, LABELS) for p in standard] == [0.0, 0.75, 0.75]
    assert accuracy(np.array([0, 2, 2, 1]), LABELS) == 0.75


def test_minus_one_predictions_are_wrong_even_for_unlabelled_rows():
    assert accuracy(np.array([-1, -1]), np.array([0, -1])) == 0.0


def test_vote_of_a_single_member_is_its_prediction():
    assert faithful_vote(torch.tensor([[2, -1, 0]]), num_classes=3).tolist() == [2, -1, 0]


def test_protocol_names():
    assert PROTOCOLS == ("faithful", "standard")
    assert check_protocol("faithful") == "faithful"
    with pytest.raises(ValueError, match=r"'paper'.*\['faithful', 'standard'\]"):
        check_protocol("paper")


def test_class_subset_is_validated():
    assert check_class_subset([1, 3, 4], 6).tolist() == [1, 3, 4]
    assert check_class_subset(np.array([0, 5]), 6).dtype == torch.long
    with pytest.raises(ValueError, match="sorted and unique"):
        check_class_subset([1, 4, 3], 6)
    with pytest.raises(ValueError, match="sorted and unique"):
        check_class_subset([1, 3, 3], 6)
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        check_class_subset([1, 6], 6)
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        check_class_subset([-1, 2], 6)
    with pytest.raises(ValueError, match="integer"):
        check_class_subset([1.0, 2.0], 6)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        check_class_subset([], 6)
