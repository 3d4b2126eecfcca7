import sys, time, socket
sys.argv=[sys.argv[0]]
exec(open('/tmp/review/cli.py').read().split("A,B=18101,18102")[0])
P=18104
ok=0
for i in range(200):
    try:
        st,sid,_=post(P,{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}})
        post(P,{"jsonrpc":"2.0","method":"notifications/initialized"},sid)
        get(P,sid,nevents=1,wait=1)   # opens the standalone stream, then the client goes away
        ok+=1
    except Exception as e:
        print("fail at",i,repr(e)); break
print("sessions with a GET opened then closed:",ok)
try:
    print("fresh request:", post(P,{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}})[0])
except Exception as e: print("fresh request failed:", repr(e))
