#!/usr/bin/env python3
"""A model of the bad day's schedule (not the service): USERS erasures of a chain of calls
(GET user, listing of connections, 3 listings of accounts, DELETE, verifying GET), calls granted
one every 1/R s by a rate limiter, faults at F with the fake's mix (503: the call again after 1 s;
500, 502, reset: after a full-jitter delay of up to 0.1 * 2^(k-1) s; a slow 504 1.5 s more), 4
tries a call, then the step's backoff (up to 2^(a-1) s). C erasures in progress at once; the
limiter's queue by arrival (fifo), by the erasure's start (oldest) or by its progress (least).
It ignores the concurrency cap and the database. C=64 by arrival matches the service's 32 worker
slots (which are lent while a step waits): about 2.0x at 300 users, 1.72x at 1,000, as measured. Prints the drain at 0 % and 35 % faults and the
ratio, for the chain as the service runs it and with a user's 3 account listings sent together.

    python3 schedule_model.py [USERS]
"""
import heapq
import random
import sys
USERS=int(sys.argv[1]) if len(sys.argv)>1 else 300
MIX=[(0.45,"503"),(0.20,"500"),(0.10,"502"),(0.10,"502a"),(0.10,"slow"),(0.05,"reset")]
def run(F, C, policy, stages, seed=1, R=195.0):
    rng=random.Random(seed)
    def fault():
        x=rng.random()
        if x>=F: return None
        y=x/F
        for s,kind in MIX:
            if y<s: return kind
            y-=s
        return "reset"
    ev=[]; seq=0; ready=[]
    stage=[0]*USERS; pending=[0]*USERS; start=[None]*USERS; done=[None]*USERS; progress=[0]*USERS
    tries={}; attempts={}
    waiting=list(range(USERS)); active=0; t=0.0; nxt=0.0; calls=0
    def prio(u,t):
        return {"fifo":t,"oldest":start[u],"least":(progress[u],start[u])}[policy]
    def enqueue(u,j,t):
        nonlocal seq; seq+=1; heapq.heappush(ready,(prio(u,t),seq,u,j))
    def later(u,j,d,t):
        nonlocal seq; seq+=1; heapq.heappush(ev,(t+d,seq,u,j))
    def begin_stage(u,t):
        n=stages[stage[u]]; pending[u]=n
        for j in range(n): tries[(u,j)]=0; attempts[(u,j)]=1; later(u,j,0.01,t)
    def admit(t):
        nonlocal active
        while active<C and waiting:
            u=waiting.pop(0); active+=1; start[u]=t; begin_stage(u,t)
    admit(0.0)
    while ready or ev:
        tg=max(nxt,t) if ready else float("inf"); te=ev[0][0] if ev else float("inf")
        if te<=tg:
            t,_,u,j=heapq.heappop(ev); enqueue(u,j,t); continue
        t=tg; nxt=t+1/R; _,_,u,j=heapq.heappop(ready); calls+=1
        f=fault()
        if f is None:
            progress[u]+=1; pending[u]-=1
            if pending[u]==0:
                stage[u]+=1
                if stage[u]==len(stages): done[u]=t; active-=1; admit(t)
                else: begin_stage(u,t)
            continue
        tries[(u,j)]+=1; k=tries[(u,j)]
        w=1.0 if f=="503" else rng.uniform(0,min(2,0.1*2**(k-1)))
        if f=="slow": w+=1.5
        if k>=4:
            tries[(u,j)]=0; a=attempts[(u,j)]; attempts[(u,j)]+=1
            w=max(w,rng.uniform(0,min(600,2**(a-1))))
        later(u,j,w,t)
    return max(done), calls
for name,st in (("sequential 7",[1,1,1,1,1,1,1]),("3 listings at once",[1,1,3,1,1])):
    for C,pol in ((32,"fifo"),(64,"fifo"),(USERS,"fifo"),(USERS,"oldest"),(USERS,"least")):
        base=[run(0.0,C,pol,st,s)[0] for s in range(3)]
        ms=[run(0.35,C,pol,st,s)[0] for s in range(3)]
        print(f"{name:20s} C={C:3d} {pol:6s} 0%: {sum(base)/3:.1f}  35%: "+" ".join(f"{m:.1f}" for m in ms), f" mean ratio {sum(ms)/len(ms)/(sum(base)/3):.2f}")
