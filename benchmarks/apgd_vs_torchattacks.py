import time, torch, torchattacks
torch.set_num_threads(1)
from sklearn.datasets import load_digits
from model_zoo.architectures.digits import DigitsMLP, DigitsCNN
from benchmark.attacks.apgd import APGD
b = load_digits(); x = torch.tensor(b.images/16., dtype=torch.float32).unsqueeze(1); y = torch.tensor(b.target)
for arch in ("mlp", "cnn"):
    torch.manual_seed(0)
    m = DigitsMLP(hidden=64) if arch == "mlp" else DigitsCNN(width=16)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    for ep in range(10):
        perm = torch.randperm(1297)
        for i in range(0, 1297, 128):
            idx = perm[i:i+128]; opt.zero_grad(); torch.nn.functional.cross_entropy(m(x[idx]), y[idx]).backward(); opt.step()
    m.eval()
    xt, yt = x[1297:1497], y[1297:1497]
    print(arch, "clean acc", (m(xt).argmax(1)==yt).float().mean().item())
    for norm, eps in (("Linf", 0.05), ("Linf", 0.1), ("L2", 0.5), ("L2", 1.0)):
        t=time.time(); out = APGD(norm, loss="ce")(m, xt, yt, eps); t1=time.time()-t
        t=time.time(); ta = torchattacks.APGD(m, norm=norm, eps=eps, steps=100, n_restarts=1, loss="ce", seed=0); xa = ta(xt, yt); t2=time.time()-t
        ra = (m(xa).argmax(1)==yt).float().mean().item()
        print(f"  {norm} eps={eps}: robench APGD-CE {(~out.success).float().mean().item():.3f} ({t1:.2f}s)  torchattacks APGD-CE {ra:.3f} ({t2:.2f}s)")
        out = APGD(norm, loss="dlr", n_targets=9)(m, xt, yt, eps)
        ta = torchattacks.APGDT(m, norm=norm, eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0); xa = ta(xt, yt)
        print(f"     robench APGD-T {(~out.success).float().mean().item():.3f}  torchattacks APGD-T {(m(xa).argmax(1)==yt).float().mean().item():.3f}")
