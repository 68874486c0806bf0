#!/usr/bin/env python3
"""Module cycles inside one crate: `scripts/module-cycles.py crates/server/src`.

Reads `crate::module` references outside comments and test modules, and prints each set of
top-level modules that reach each other (a strongly connected set larger than one), with the
edges inside it. No output (exit status 0) means no cycles; any cycle exits 1 (`make lint`
runs it on every crate)."""
import re,os,sys
root=sys.argv[1]
mods={}
for dp,dn,fn in os.walk(root):
    for f in fn:
        if not f.endswith('.rs'): continue
        path=os.path.join(dp,f)
        rel=os.path.relpath(path,root)[:-3]
        top=rel.split('/')[0]
        if top in ('lib','main'): continue
        s=open(path).read()
        s='\n'.join(l for l in s.split('\n') if not l.strip().startswith('//'))
        # strip test modules
        s=re.split(r'#\[cfg\(test\)\]\s*mod tests',s)[0]
        deps=set(re.findall(r'crate::([a-z_]+)',s))
        for m in re.findall(r'use crate::\{([^}]*)\}',s):
            deps|=set(re.findall(r'\b([a-z_]+)(?:::|\b)',m))
        mods.setdefault(top,set()).update(d for d in deps if d!=top)
names=set(mods)
g={m:{d for d in ds if d in names} for m,ds in mods.items()}
# find SCCs
idx={};low={};st=[];on=set();res=[];c=[0]
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in g[v]:
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        if len(comp)>1: res.append(comp)
sys.setrecursionlimit(10000)
for v in g:
    if v not in idx: sc(v)
for comp in res:
    print(root, 'cycle among:', sorted(comp))
    for a in sorted(comp):
        print('  ',a,'->',sorted(g[a]&set(comp)))
sys.exit(1 if res else 0)
