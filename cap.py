import threading, collections
exec(open('/tmp/review/w1/cli.py').read().split("A,B=18101,18102")[0])
P=18105; res=collections.Counter()
def one():
    try: res[post(P,{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}})[0]]+=1
    except Exception as e: res[repr(e)]+=1
ts=[threading.Thread(target=one) for _ in range(30)]
[t.start() for t in ts]; [t.join() for t in ts]
print(dict(res))
