import pytest
import torch

from ssl_bench.evals.knn import knn_accuracy


def test_separable_classes_give_full_accuracy():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 32, generator=g) * 5
    ytr = torch.arange(500) % 5
    yte = torch.arange(200) % 5
    xtr = centers[ytr] + 0.1 * torch.randn(500, 32, generator=g)
    xte = centers[yte] + 0.1 * torch.randn(200, 32, generator=g)
    res = knn_accuracy(xtr, ytr, xte, yte, [1, 20])
    assert res[20]["top1"] == 1.0 and res[1]["top1"] == 1.0


def test_random_labels_give_chance():
    g = torch.Generator().manual_seed(0)
    xtr, xte = torch.randn(4000, 16, generator=g), torch.randn(2000, 16, generator=g)
    ytr, yte = torch.randint(0, 10, (4000,), generator=g), torch.randint(0, 10, (2000,), generator=g)
    res = knn_accuracy(xtr, ytr, xte, yte, [20])
    assert 0.05 < res[20]["top1"] < 0.16
    assert 0.4 < res[20]["top5"] < 0.6


def test_weighted_vote_by_hand():
    # query at angle 0; bank: one class-0 item at cos 1.0, two class-1 items at cos 0.9
    xtr = torch.tensor([[1.0, 0.0], [0.9, 0.43589], [0.9, -0.43589]])
    ytr = torch.tensor([0, 1, 1])
    xte, yte = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    # T=0.07: exp(1/0.07)=1.6e6 > 2*exp(0.9/0.07)=7.7e5 -> class 0; T=1: e^1=2.7 < 2e^0.9=4.9 -> class 1
    assert knn_accuracy(xtr, ytr, xte, yte, [3], temperature=0.07)[3]["top1"] == 1.0
    assert knn_accuracy(xtr, ytr, xte, yte, [3], temperature=1.0)[3]["top1"] == 0.0


def test_chunking_does_not_change_result():
    from ssl_bench.evals.knn import knn_predict_scores

    g = torch.Generator().manual_seed(1)
    xtr, xte = torch.randn(300, 8, generator=g), torch.randn(100, 8, generator=g)
    ytr = torch.randint(0, 4, (300,), generator=g)
    a = knn_predict_scores(xtr, ytr, xte, [10], chunk=7)[10]
    b = knn_predict_scores(xtr, ytr, xte, [10], chunk=1000)[10]
    assert torch.allclose(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs it)")
def test_knn_and_the_torch_linear_probe_on_the_gpu_equal_the_cpu():
    """The evaluations on the training device: k-NN scores and the torch linear probe on a GPU give the CPU's
    numbers (issue 18: evaluations on the training device)."""
    from ssl_bench.evals.linear import fit_linear_probe_torch

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 32, generator=g)
    ytr, yte = torch.arange(2000) % 5, torch.arange(500) % 5
    xtr = centers[ytr] + torch.randn(2000, 32, generator=g)
    xte = centers[yte] + torch.randn(500, 32, generator=g)
    cpu = knn_accuracy(xtr, ytr, xte, yte, [20])
    gpu = knn_accuracy(xtr.cuda(), ytr.cuda(), xte.cuda(), yte.cuda(), [20])
    assert abs(cpu[20]["top1"] - gpu[20]["top1"]) <= 1 / 500
    lin_cpu = fit_linear_probe_torch(xtr, ytr, xte, yte, [0.1, 1.0], 0, "cpu")
    lin_gpu = fit_linear_probe_torch(xtr, ytr, xte, yte, [0.1, 1.0], 0, "cuda")
    assert lin_gpu["C"] == lin_cpu["C"] and abs(lin_gpu["top1"] - lin_cpu["top1"]) <= 2 / 500
