//! What ships beside the binary, checked with the tools that consume it: the systemd unit
//! (systemd-analyze), the Prometheus rules, configuration and dashboard (promtool), the
//! Kubernetes manifests (kubernetes-validate) and the Debian package (dpkg-deb). No kernel and
//! no root needed.

mod debian_package;
mod deploy_files;
mod kubernetes_manifests;
mod kubernetes_scrape;
mod systemd_unit;
mod tools;
