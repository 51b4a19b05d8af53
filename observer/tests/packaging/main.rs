//! What ships beside the binary, checked with the tools that consume it: the systemd unit
//! (systemd-analyze), the Prometheus rules, configuration and dashboard (promtool), the
//! Kubernetes manifests (kubernetes-validate) and the Debian package (dpkg-deb). No kernel and
//! no root needed.

mod debian_package;
mod grafana_dashboard;
mod kubernetes_manifests;
mod kubernetes_scrape;
mod metrics_contract;
mod prometheus_rules;
mod systemd_unit;
mod tools;
