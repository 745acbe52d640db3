import sys,collections,subprocess
f=sys.argv[1]
out=subprocess.run(['perf','script','-i',f,'-F','pid,tid,ip,sym'],capture_output=True,text=True).stdout
c=collections.Counter(); ms=0; n=0; main=None
for l in out.splitlines():
    p=l.split(None,2)
    if len(p)<2 or '/' not in p[0]: continue
    pid,tid=p[0].split('/')
    sym=p[2] if len(p)>2 else ''
    n+=1; c[tid]+=1
    if pid==tid:
        main=tid
        if 'memset' in sym: ms+=1
print(f, 'total',n,'main',c[main],'main share %.1f%%'%(100*c[main]/n),'main memset',ms)
