//! The AWS emulator (moto server) on a free 127.0.0.1 port, stopped when dropped. Its path
//! comes from `CUTOVER_MOTO_SERVER`, which scripts/test sets after installing it into `.venv`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Self {
        let bin = std::env::var("CUTOVER_MOTO_SERVER").expect(
            "CUTOVER_MOTO_SERVER names the moto_server binary; scripts/test installs it into .venv",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// Points the standard credential chain and endpoint at the emulator, for this process and
    /// the commands it starts.
    pub fn export_env(&self, region: &str) {
        std::env::set_var("AWS_ENDPOINT_URL", &self.endpoint);
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_REGION", region);
    }
}

impl Moto {
    /// Publishes one datapoint into `AWS/ApplicationELB` for a target group behind a load
    /// balancer, as ELBv2 itself would: CloudWatch's query API, as any client may call it.
    pub fn put_alb_metric(
        &self,
        load_balancer: &str,
        target_group: &str,
        metric: &str,
        value: f64,
    ) {
        let value = value.to_string();
        let form = [
            ("Action", "PutMetricData"),
            ("Version", "2010-08-01"),
            ("Namespace", "AWS/ApplicationELB"),
            ("MetricData.member.1.MetricName", metric),
            ("MetricData.member.1.Value", value.as_str()),
            ("MetricData.member.1.Unit", "Count"),
            (
                "MetricData.member.1.Dimensions.member.1.Name",
                "LoadBalancer",
            ),
            (
                "MetricData.member.1.Dimensions.member.1.Value",
                load_balancer,
            ),
            (
                "MetricData.member.1.Dimensions.member.2.Name",
                "TargetGroup",
            ),
            (
                "MetricData.member.1.Dimensions.member.2.Value",
                target_group,
            ),
        ];
        let status = reqwest::blocking::Client::new()
            .post(&self.endpoint)
            // The emulator tells services apart by the credential scope; it checks no signature.
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-west-2/monitoring/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .form(&form)
            .send()
            .map(|r| r.status());
        assert!(
            status.as_ref().is_ok_and(|s| s.is_success()),
            "PutMetricData: {status:?}"
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
