import torch, time
torch.set_num_threads(1)
from model_zoo.architectures.digits import DigitsCNN
from benchmark.attacks.fab import FAB
from benchmark.data import load_dataset
torch.manual_seed(0)
x,y=load_dataset("digits","test",n_examples=100)
m=DigitsCNN().eval()
# quick train few steps so it's meaningful
opt=torch.optim.Adam(m.parameters(),1e-2)
xt,yt=load_dataset("digits","train")
m.train()
for ep in range(30):
    loss=torch.nn.functional.cross_entropy(m(xt),yt); opt.zero_grad(); loss.backward(); opt.step()
m.eval()
for p in m.parameters(): p.requires_grad_(False)
print("acc",(m(x).argmax(1)==y).float().mean().item())
model_time=[0.0]
class Timed(torch.nn.Module):
    def __init__(s,m): super().__init__(); s.m=m
    def forward(s,x): return s.m(x)
import sys
for tm,eps in [("Linf",0.1),("L2",0.5)]:
  for nt in [9,0]:
    a=FAB(tm,n_targets=nt)
    t=time.perf_counter(); out=a(m,x,y,eps); T=time.perf_counter()-t
    # model-only cost: same number of rows, 100 iterations of grad forward+backward + nograd forward
    R=len(x)*max(nt,1)
    xr=x.repeat(max(nt,1),1,1,1)
    t=time.perf_counter()
    for i in range(100):
        xx=xr.clone().requires_grad_(True)
        z=m(xx)
        if nt: torch.autograd.grad(z[:,0].sum(),xx)
        else:
            for k in range(10): torch.autograd.grad(z[:,k].sum(),xx,retain_graph=k<9)
        with torch.no_grad(): m(xr)
    M=time.perf_counter()-t
    print(tm,nt,"attack %.2fs model-only %.2fs frac %.2f"%(T,M,M/T),"robust acc",1-out.success.float().mean().item(), "median min_norm", out.min_norm.median().item())
