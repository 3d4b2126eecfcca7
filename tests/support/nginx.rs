//! A real nginx (Debian's `nginx-light`, installed by `scripts/setup-peers.sh`) in front of a
//! proxy under test, as an operator's load balancer: HTTP/1.1 upstream, no buffering, and a
//! short `proxy_read_timeout` — the idle timeout a stream must survive. Its files live in a
//! temporary prefix; it runs in the foreground and is killed when dropped.

use std::{net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

/// The nginx binary: on `PATH` or Debian's `/usr/sbin/nginx`. Panics (the test fails, it does
/// not skip) when there is none.
fn nginx_bin() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.exists() {
        return sbin;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("nginx"))
                .find(|p| p.exists())
        })
        .expect("nginx is not installed: run `bash scripts/setup-peers.sh` (installs nginx-light)")
}

/// A running nginx proxying `http://<listen>/` to an upstream.
pub struct Nginx {
    child: Child,
    listen: SocketAddr,
    _prefix: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx on a free loopback port, proxying every path to `upstream` with
    /// `proxy_read_timeout` = `read_timeout` (whole seconds).
    pub async fn start(upstream: SocketAddr, read_timeout: Duration) -> Self {
        let prefix = tempfile::tempdir().expect("nginx prefix");
        let listen = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address")
        };
        let dir = prefix.path().display();
        let conf = format!(
            "master_process off;\n\
             pid {dir}/nginx.pid;\n\
             error_log {dir}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {dir}/client_body;\n\
               proxy_temp_path {dir}/proxy;\n\
               fastcgi_temp_path {dir}/fastcgi;\n\
               uwsgi_temp_path {dir}/uwsgi;\n\
               scgi_temp_path {dir}/scgi;\n\
               server {{\n\
                 listen {listen};\n\
                 location / {{\n\
                   proxy_pass http://{upstream};\n\
                   proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\";\n\
                   proxy_buffering off;\n\
                   proxy_request_buffering off;\n\
                   proxy_read_timeout {}s;\n\
                 }}\n\
               }}\n\
             }}\n",
            read_timeout.as_secs()
        );
        let conf_path = prefix.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Self {
            child,
            listen,
            _prefix: prefix,
        };
        for _ in 0..200 {
            // An nginx that exited (its port taken meanwhile, a bad configuration) fails the
            // test with its log, rather than the test talking to whoever holds the port.
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}) at start:\n{}", nginx.error_log());
            }
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                return nginx;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nginx did not listen on {listen} within 5 s");
    }

    /// The MCP endpoint through nginx.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// nginx's error log so far (it records upstream read timeouts).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self._prefix.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
