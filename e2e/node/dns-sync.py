#!/usr/bin/env python3
"""Cluster DNS records for the one-node cluster, from the API to dnsmasq.

Polls the API server's Services and Endpoints once a second and writes a
hosts file that dnsmasq serves (`--addn-hosts`), then sends dnsmasq SIGHUP
so it rereads the file. Records, as CoreDNS's kubernetes plugin gives them:

- a Service with a cluster IP: <svc>.<ns>.svc.cluster.local -> cluster IP;
- a headless Service: <svc>.<ns>.svc.cluster.local -> every endpoint address
  (not-ready ones too when the Service publishes them), and
  <hostname>.<svc>.<ns>.svc.cluster.local for endpoints with a hostname
  (StatefulSet pods).

It speaks HTTP to the API server only; DNS itself is dnsmasq's.
"""
import argparse
import json
import os
import signal
import ssl
import sys
import time
import urllib.request

DOMAIN = "cluster.local"
STOP = False


def kubeconfig(path):
    """Server, CA file and token from the flat kubeconfig node.sh writes."""
    server = ca = token = None
    for line in open(path, encoding="utf-8"):
        key, _, value = line.strip().partition(": ")
        if key == "server":
            server = value
        elif key == "certificate-authority":
            ca = value
        elif key == "token":
            token = value
    if not (server and ca and token):
        sys.exit(f"{path}: server, certificate-authority and token are required")
    return server, ca, token


def get(server, context, token, path):
    request = urllib.request.Request(server + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, context=context, timeout=5) as response:
        return json.load(response)


def records(services, endpoints):
    by_key = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in endpoints["items"]}
    lines = []
    for svc in services["items"]:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        fqdn = f"{name}.{ns}.svc.{DOMAIN}"
        cluster_ip = svc.get("spec", {}).get("clusterIP")
        if cluster_ip and cluster_ip != "None":
            lines.append(f"{cluster_ip} {fqdn}")
            continue
        publish_not_ready = svc.get("spec", {}).get("publishNotReadyAddresses", False)
        for subset in by_key.get((ns, name), {}).get("subsets", []) or []:
            addresses = list(subset.get("addresses", []) or [])
            if publish_not_ready:
                addresses += subset.get("notReadyAddresses", []) or []
            for address in addresses:
                lines.append(f"{address['ip']} {fqdn}")
                if address.get("hostname"):
                    lines.append(f"{address['ip']} {address['hostname']}.{fqdn}")
    return "\n".join(sorted(set(lines))) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--hosts", required=True)
    parser.add_argument("--pid-file", required=True, help="dnsmasq's pid file")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()

    def stop(*_):
        global STOP
        STOP = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server, ca, token = kubeconfig(args.kubeconfig)
    context = ssl.create_default_context(cafile=ca)
    current = None
    while not STOP:
        try:
            text = records(get(server, context, token, "/api/v1/services"),
                           get(server, context, token, "/api/v1/endpoints"))
            if text != current:
                tmp = args.hosts + ".tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(text)
                os.chmod(tmp, 0o644)
                os.replace(tmp, args.hosts)
                with open(args.pid_file, encoding="utf-8") as f:
                    os.kill(int(f.read().strip()), signal.SIGHUP)
                current = text
                print(f"{time.strftime('%H:%M:%S')} {text.count(chr(10))} records", flush=True)
        except Exception as error:  # the API server or dnsmasq may be restarting
            print(f"{time.strftime('%H:%M:%S')} not synced: {error}", flush=True)
        time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
