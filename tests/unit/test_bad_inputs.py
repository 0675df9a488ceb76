"""A table of bad deployments: each is refused with its exact file/scope/key path, exit status 2,
no traceback, and no secret value anywhere in the output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from conftest import (
    HUB_HOST,
    SCOPE,
    SECRET_VALUES,
    base_configs,
    base_hosts,
    base_passwords,
    key_body,
    make_cert,
    run_cli,
)

Mutation = Callable[[dict], Any]

CERT, KEY = make_cert()
OTHER_CERT, OTHER_KEY = make_cert()
EXPIRED_CERT, EXPIRED_KEY = make_cert(days=-1, start_days_ago=30)
WRONG_HOST_CERT, WRONG_HOST_KEY = make_cert("other.example.org")
KEY_LINES = [line for pem in (KEY, OTHER_KEY, EXPIRED_KEY, WRONG_HOST_KEY) for line in key_body(pem)]


def conf(**values: Any) -> Mutation:
    """Set keys in the deployment's most specific configs scope."""
    return lambda d: d[SCOPE].update(values)


def drop(key: str) -> Mutation:
    return lambda d: d[SCOPE].pop(key)


def mount(index: int, value: Any) -> Mutation:
    def apply(d: dict) -> None:
        d[SCOPE]["volume_mounts"][index] = value

    return apply


def host(index: int, **values: Any) -> Mutation:
    def apply(d: dict) -> None:
        entry = d[SCOPE]["hosts"][index]
        for key, value in values.items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value

    return apply


def secret(**values: Any) -> Mutation:
    return lambda d: d[SCOPE].update(values)


def both(*mutations: Mutation) -> Mutation:
    def apply(d: dict) -> None:
        for m in mutations:
            m(d)

    return apply


P = f"site.configs: {SCOPE}"
H = f"site.hosts: {SCOPE}"
OIDC_ISSUER = "https://id.example.org/realms/hub"
TAS_ON = conf(use_tas_uid=True, use_tas_gid=True, tas_role_account="jhub-role")


@dataclass
class Case:
    id: str
    expect: list[str]
    configs: Mutation | str | None = None
    passwords: Mutation | str | None = None
    hosts: Mutation | str | None = None
    args: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


CASES = [
    # --- YAML and file shape
    Case("yaml-syntax", ["site.configs: line 3, column 1: YAML syntax error"], configs="jupyterhub:\n  volume_mounts: [a, b\n"),
    Case("yaml-duplicate-key", ['site.configs: line 3, column 3: YAML syntax error: duplicate key "jupyterhub_host"'],
         configs=f"{SCOPE}:\n  jupyterhub_host: a.org\n  jupyterhub_host: b.org\n"),
    Case("top-level-list", ["site.configs: the top level must be a mapping of scopes"], configs="- jupyterhub\n"),
    Case("scope-not-mapping", ["site.configs: jupyterhub.prod: a scope must hold a mapping of keys, got int"],
         configs=lambda d: d.update({"jupyterhub.prod": 5})),
    Case("not-a-scope", ["site.configs: volume mounts: not a scope"], configs=lambda d: d.update({"volume mounts": []})),
    Case("misspelt-project", ["site.configs: jupyterhb: unknown top-level key; did you mean jupyterhub?"], configs=lambda d: d.update({"jupyterhb": {}})),
    Case("yaml-unhashable-key", ["site.configs: line 2, column 5: YAML syntax error: a key must be a plain value (text or a number), not a list or mapping"],
         configs="jupyterhub:\n  ? [a, b]\n  : 1\n"),
    Case("yaml-too-deep", ["site.configs: values are nested more than 32 levels deep"], configs="jupyterhub:\n  x: " + "[" * 3000 + "]" * 3000 + "\n"),
    Case("yaml-alias-bomb", ["site.hosts: the file expands to more than 20000 values (through aliases?)"],
         hosts="l0: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
             f"l{i}: &{chr(97 + i)} [{', '.join(['*' + chr(96 + i)] * 10)}]\n" for i in range(1, 6))),
    Case("yaml-too-large", ["site.configs: the file is larger than 1024 KiB"], configs="# " + "x" * (1024 * 1024) + "\njupyterhub: {}\n"),
    Case("yaml-control-character", [f"site.configs: {SCOPE}/jupyterhub_host: holds a control character (U+001B); remove it"],
         configs=f'{SCOPE}:\n  jupyterhub_host: "jupyter\\x1b[2J.example.org"\n'),
    Case("yaml-lone-surrogate", [f"site.hosts: {SCOPE}/hosts/0/host_id: holds a lone surrogate (U+DC80)"],
         hosts=f'{SCOPE}:\n  hosts:\n    - host_id: "hub\\udc80"\n      ssh_host: 10.0.0.1\n      roles: [hub, worker]\n'),
    Case("mount-path-tab", [f"{P}/volume_mounts/0: host_path contains a control character (a tab, a newline, ...)"],
         configs=mount(0, "/data/\tx/{username}:/home/jupyter/x:rw")),
    Case("mount-double-slash-root", [f"{P}/volume_mounts/0: host_path must not be / (the whole filesystem)"],
         configs=mount(0, "//:/home/jupyter/root:rw")),
    Case("mount-variable-below-root", [f"{P}/volume_mounts/0: host_path '/{{username}}' puts a variable directly below /"],
         configs=mount(0, "/{username}:/home/jupyter/permanent:rw")),
    Case("mount-container-variable-below-root", [f"{P}/volume_mounts/0: container_path '/{{username}}' puts a variable directly below /"],
         configs=mount(0, "/data/{username}:/{username}:rw")),
    Case("mount-paths-collide-after-normalising", [f"{P}/volume_mounts/1: container_path '/home/jupyter/permanent' is already used by volume_mounts/0"],
         configs=mount(1, "/data/shared:/home/jupyter/./permanent//:ro")),
    Case("servers-yaml-syntax", ["site.hosts: line 2, column 5: YAML syntax error: mapping values are not allowed here"], hosts="a: b\nc: d: e\n"),
    Case("missing-configs-file", ["nothing.configs: file not found"], args=["-c", "nothing.configs"]),
    Case("deployment-yml-unknown-key", ["deployment.yml: servrs: unknown key"], files={"deployment.yml": "servrs: site.hosts\n"}),
    # --- required keys
    Case("missing-host", [f"{P}/jupyterhub_host: required key is missing; set it in site.configs under {SCOPE}"], configs=drop("jupyterhub_host")),
    Case("missing-client-id", [f"{P}/jupyterhub_oauth_client_id: required key is missing"], configs=drop("jupyterhub_oauth_client_id")),
    Case("missing-client-secret", [f"site.passwords: {SCOPE}/jupyterhub_oauth_client_secret: required key is missing; set it in site.passwords"],
         passwords=lambda d: d[SCOPE].pop("jupyterhub_oauth_client_secret")),
    Case("empty-client-secret", [f"site.passwords: {SCOPE}/jupyterhub_oauth_client_secret: must not be empty"],
         passwords=secret(jupyterhub_oauth_client_secret="  ")),
    Case("secret-not-string", [f"site.passwords: {SCOPE}/tas_role_pass: must be a string; quote the value"],
         configs=TAS_ON, passwords=secret(tas_role_pass=31415926)),
    # --- jupyterhub_host
    Case("host-with-scheme", [f"{P}/jupyterhub_host: give the domain without the protocol: 'jupyter.example.org'"],
         configs=conf(jupyterhub_host="https://jupyter.example.org")),
    Case("host-with-path", [f"{P}/jupyterhub_host: give only the domain, without a path"], configs=conf(jupyterhub_host="jupyter.example.org/hub")),
    Case("host-bad-chars", [f"{P}/jupyterhub_host: 'jupyter_hub!.org' is not a valid domain name"], configs=conf(jupyterhub_host="jupyter_hub!.org")),
    Case("host-bare-ipv6", [f"{P}/jupyterhub_host: put an IPv6 address in brackets: [2001:db8::1] (or [2001:db8::1]:port)"],
         configs=conf(jupyterhub_host="2001:db8::1")),
    Case("host-link-local-ipv6", [f"{P}/jupyterhub_host: '[fe80::abcd]' is link-local: browsers cannot reach it"], configs=conf(jupyterhub_host="[fe80::abcd]")),
    Case("host-bare-link-local", [f"{P}/jupyterhub_host: put an IPv6 address in brackets: [fe80::abcd]"], configs=conf(jupyterhub_host="fe80::abcd")),
    Case("host-bad-bracket", [f"{P}/jupyterhub_host: '[2001:db8::1]x' is not [IPv6] or [IPv6]:port"], configs=conf(jupyterhub_host="[2001:db8::1]x")),
    Case("host-port-zero", [f"{P}/jupyterhub_host: port must be a number from 1 to 65535, got '0'"], configs=conf(jupyterhub_host="jupyter.example.org:0")),
    Case("host-bad-port", [f"{P}/jupyterhub_host: port must be a number from 1 to 65535, got '99999'"], configs=conf(jupyterhub_host="jupyter.example.org:99999")),
    Case("unknown-key", [f"{P}/jupyterhub_hots: unknown key; did you mean jupyterhub_host?"], configs=conf(jupyterhub_hots="x.org")),
    # --- volume_mounts
    Case("mount-mode", [f'{P}/volume_mounts/1: mode must be ro or rw, got "rx"'], configs=mount(1, "/data/shared:/home/jupyter/shared:rx")),
    Case("mount-relative-host", [f"{P}/volume_mounts/0: host_path must be an absolute path, got 'data/{{username}}'"],
         configs=mount(0, "data/{username}:/home/jupyter/permanent:rw")),
    Case("mount-relative-container", [f"{P}/volume_mounts/0: container_path must be an absolute path"], configs=mount(0, "/data/{username}:permanent:rw")),
    Case("mount-dotdot", [f"{P}/volume_mounts/0: host_path must not contain '..'"], configs=mount(0, "/data/../etc:/home/jupyter/etc:ro")),
    Case("mount-two-parts", [f"{P}/volume_mounts/1: expected host_path:container_path:mode"], configs=mount(1, "/data/shared:/home/jupyter/shared")),
    Case("mount-unknown-variable", [f"{P}/volume_mounts/0: unknown template variable {{user}}"], configs=mount(0, "/data/{user}:/home/jupyter/permanent:rw")),
    Case("mount-tas-without-tas", [f"{P}/volume_mounts/0: {{tas_homeDirectory}} needs TAS integration"],
         configs=mount(0, "/work/{tas_homeDirectory}:/home/jupyter/tacc-work:rw")),
    Case("mount-format-spec", [f"{P}/volume_mounts/0: template variable {{username}} in '/data/{{username!r}}' may not have a format spec"],
         configs=mount(0, "/data/{username!r}:/home/jupyter/permanent:rw")),
    Case("mount-not-string", [f"{P}/volume_mounts/1: must be a string host_path:container_path:mode, got int"], configs=mount(1, 42)),
    Case("mounts-not-list", [f"{P}/volume_mounts: must be a list"], configs=conf(volume_mounts="/a:/b:rw")),
    Case("mount-root", [f"{P}/volume_mounts/1: host_path must not be / (the whole filesystem)"], configs=mount(1, "/:/host:ro")),
    Case("mount-duplicate-target", [f"{P}/volume_mounts/1: container_path '/home/jupyter/permanent' is already used by volume_mounts/0"],
         configs=mount(1, "/data/other:/home/jupyter/permanent:ro")),
    Case("mount-unclosed-brace", [f"{P}/volume_mounts/0: malformed template"], configs=mount(0, "/data/{username:/home/jupyter/permanent:rw")),
    # --- tenant
    Case("unknown-tenant", [f"{P}/jupyterhub_tenant_base_url: required: 'mytenant' is not a standard tenant"], configs=conf(tenant="mytenant")),
    Case("base-url-not-url", [f"{P}/jupyterhub_tenant_base_url: must be an http(s) URL"], configs=conf(tenant="mytenant", jupyterhub_tenant_base_url="ftp://x.org")),
    Case("base-url-plain-http", [f"{P}/jupyterhub_tenant_base_url: must use https"], configs=conf(jupyterhub_tenant_base_url="http://api.example.org")),
    Case("tenant-type", [f"{P}/tenant_type: must be 'agave', 'tapis' or 'oidc', got 'keycloak'"], configs=conf(tenant_type="keycloak")),
    Case("oidc-without-url", [f"{P}/jupyterhub_tenant_base_url: required: tenant_type oidc needs the provider's issuer URL"], configs=conf(tenant_type="oidc")),
    Case("tenant-bad-id", [f"{P}/tenant: must be letters, digits"], configs=conf(tenant="my tenant")),
    Case("case-insensitive-not-bool", [f"{P}/tenant_case_insensitive: must be a valid boolean, unable to interpret input, got 'maybe'"],
         configs=conf(tenant_case_insensitive="maybe")),
    Case("claim-on-agave-tenant", [f"{P}/oidc_username_claim: only applies to OpenID Connect tenants (tenant_type: oidc); tenant 'designsafe' is agave"],
         configs=conf(oidc_username_claim="email")),
    Case("claim-on-tapis-tenant", [f"{P}/oidc_username_claim: only applies to OpenID Connect tenants (tenant_type: oidc); tenant 'designsafe' is tapis"],
         configs=conf(tenant_type="tapis", oidc_username_claim="preferred_username")),
    Case("claim-empty", [f"{P}/oidc_username_claim: must not be empty; leave the key out for the default preferred_username"],
         configs=conf(tenant_type="oidc", jupyterhub_tenant_base_url=OIDC_ISSUER, oidc_username_claim="")),
    Case("claim-with-space", [f"{P}/oidc_username_claim: must not contain whitespace, got 'user name'"],
         configs=conf(tenant_type="oidc", jupyterhub_tenant_base_url=OIDC_ISSUER, oidc_username_claim="user name")),
    Case("claim-too-long", [f"{P}/oidc_username_claim: must be at most 128 characters, got 129"],
         configs=conf(tenant_type="oidc", jupyterhub_tenant_base_url=OIDC_ISSUER, oidc_username_claim="c" * 129)),
    # caught when the file is read: no value may hold a control character (named by path, not quoted)
    Case("claim-not-printable", [f"{P}/oidc_username_claim: holds a control character (U+0000); remove it (the value is not shown)"],
         configs=conf(tenant_type="oidc", jupyterhub_tenant_base_url=OIDC_ISSUER, oidc_username_claim="user\x00name")),
    Case("claim-not-string", [f"{P}/oidc_username_claim: must be the name of a claim such as preferred_username or email, got int"],
         configs=conf(tenant_type="oidc", jupyterhub_tenant_base_url=OIDC_ISSUER, oidc_username_claim=7)),
    # --- TLS
    Case("cert-without-key", [f"site.passwords: {SCOPE}/jupyterhub_key: required because jupyterhub_cert is set"], configs=conf(jupyterhub_cert=CERT)),
    Case("key-without-cert", [f"{P}/jupyterhub_cert: required because jupyterhub_key is set"], passwords=secret(jupyterhub_key=KEY)),
    Case("cert-key-mismatch", [f"site.passwords: {SCOPE}/jupyterhub_key: does not match jupyterhub_cert"],
         configs=conf(jupyterhub_cert=CERT), passwords=secret(jupyterhub_key=OTHER_KEY)),
    Case("cert-garbage", [f"{P}/jupyterhub_cert: not a PEM certificate"],
         configs=conf(jupyterhub_cert="-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"), passwords=secret(jupyterhub_key=KEY)),
    Case("key-garbage", [f"site.passwords: {SCOPE}/jupyterhub_key: not a PEM private key"],
         configs=conf(jupyterhub_cert=CERT), passwords=secret(jupyterhub_key="-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")),
    Case("cert-expired", [f"{P}/jupyterhub_cert: expired on"], configs=conf(jupyterhub_cert=EXPIRED_CERT), passwords=secret(jupyterhub_key=EXPIRED_KEY)),
    Case("cert-wrong-host", [f"{P}/jupyterhub_cert: does not cover jupyterhub_host '{HUB_HOST}' (it covers: other.example.org)"],
         configs=conf(jupyterhub_cert=WRONG_HOST_CERT), passwords=secret(jupyterhub_key=WRONG_HOST_KEY)),
    Case("cert-file-missing", [f"{P}/jupyterhub_cert: is not PEM text and no file 'hub.crt' exists in the extras directory extras"],
         configs=conf(jupyterhub_cert="hub.crt"), passwords=secret(jupyterhub_key="hub.key"), files={"extras/hub.key": KEY}),
    Case("cert-file-escapes-extras", [f"{P}/jupyterhub_cert: the file '../site.hosts' must be inside the extras directory"],
         configs=conf(jupyterhub_cert="../site.hosts"), passwords=secret(jupyterhub_key="hub.key"), files={"extras/hub.key": KEY}),
    # --- TAS and identities
    Case("tas-missing-account", [f"{P}/tas_role_account: required because use_tas_uid is true",
                                 f"site.passwords: {SCOPE}/tas_role_pass: required because use_tas_uid is true"],
         configs=conf(use_tas_uid=True)),
    Case("tas-non-tacc-tenant", [f"{P}/use_tas_uid: tenant '3dem' does not use TACC's identity provider"],
         configs=both(TAS_ON, conf(tenant="3dem")), passwords=secret(tas_role_pass="x")),
    Case("uid-root", [f"{P}/jupyteruser_uid: must not be 0: notebooks never run as root"], configs=conf(jupyteruser_uid=0)),
    Case("uid-not-number", [f"{P}/jupyteruser_uid: must be a whole number, got 'abc'"], configs=conf(jupyteruser_uid="abc")),
    # notebook_uid_range: each user's own ids
    Case("uid-range-shape", [f"{P}/notebook_uid_range: must be FIRST-LAST, e.g. 200000-299999"], configs=conf(notebook_uid_range="200000")),
    Case("uid-range-words", [f"{P}/notebook_uid_range: must be two whole numbers FIRST-LAST"], configs=conf(notebook_uid_range="a-b")),
    Case("uid-range-system-ids", [f"{P}/notebook_uid_range: must run from at least 1000"], configs=conf(notebook_uid_range="0-999")),
    Case("uid-range-backwards", [f"{P}/notebook_uid_range: must run from at least 1000 up to at most 2147483646, FIRST not above LAST"],
         configs=conf(notebook_uid_range=[300000, 200000])),
    Case("uid-range-nobody", [f"{P}/notebook_uid_range: must not include 65534 (nobody"], configs=conf(notebook_uid_range="60000-70000")),
    Case("uid-range-with-tas", [f"{P}/notebook_uid_range: TAS gives each user's ids"], configs=both(TAS_ON, conf(notebook_uid_range="200000-299999")),
         passwords=lambda d: d[SCOPE].update(tas_role_pass="S3CR3T-tas-pass")),
    Case("uid-range-with-one-uid", [f"{P}/jupyteruser_uid: jupyteruser_uid runs every notebook with one id"],
         configs=conf(notebook_uid_range="200000-299999", jupyteruser_uid=5000)),
    Case("gid-negative", [f"{P}/jupyteruser_gid: must be between 1 and 2147483647, got -5"], configs=conf(jupyteruser_gid=-5)),
    Case("tenant-id-capitals", [f"{P}/tenant: must be lower case (tenant ids are; the hub names the token directory after it), got 'MyTenant': use 'mytenant'"],
         configs=conf(tenant="MyTenant", tenant_type="tapis")),
    Case("pids-limit-bool", [f"{P}/notebook_pids_limit: must be a whole number of processes, got True"], configs=conf(notebook_pids_limit=True)),
    Case("pids-limit-tiny", [f"{P}/notebook_pids_limit: must be 0 (no limit) or between 64 and 4194304, got 5 (a notebook server alone runs dozens of threads)"],
         configs=conf(notebook_pids_limit=5)),
    Case("pids-limit-text", [f"{P}/notebook_pids_limit: must be a whole number of processes, got '4k'"], configs=conf(notebook_pids_limit="4k")),
    Case("egress-not-a-list", [f"{P}/notebook_egress_allow: must be a list of ADDRESS[/PREFIX][:PORT] entries"], configs=conf(notebook_egress_allow="10.0.0.0/8")),
    Case("egress-bad-port", [f"{P}/notebook_egress_allow: entry 2: '10.1.2.3:99999': the port must be a number from 1 to 65535"],
         configs=conf(notebook_egress_allow=["10.1.0.0/16", "10.1.2.3:99999"])),
    # --- validation rules that had no row (issue 23, point 6)
    Case("local-dev-short-password", [f"site.passwords: {SCOPE}/local_dev_password: must be at least 12 characters"],
         configs=conf(login="local-dev"), passwords=secret(local_dev_password="short-pw")),
    Case("local-dev-with-tas", ["/login: the local-dev login has no tenant identity, so TAS cannot be used: set use_tas_uid/use_tas_gid to false"],
         configs=conf(login="local-dev", use_tas_uid=True), passwords=secret(local_dev_password="long-enough-password")),
    Case("self-signed-with-cert", [f"{P}/jupyterhub_cert: jupyterhub_tls is self-signed: remove jupyterhub_cert and jupyterhub_key, or jupyterhub_tls"],
         configs=conf(jupyterhub_tls="self-signed", jupyterhub_cert=CERT), passwords=secret(jupyterhub_key=KEY)),
    Case("cpu-below-range", [f"{P}/notebook_cpu_limit: must be between 0.01 and"], configs=conf(notebook_cpu_limit=0.001)),
    Case("cpu-not-a-number", [f"{P}/notebook_cpu_guarantee: must be a number of CPUs such as 2 or 0.5, got 'two'"], configs=conf(notebook_cpu_guarantee="two")),
    Case("env-value-not-a-string", [f"{P}/notebook_env: LICENSE: must be a string (quote it), got bool"], configs=conf(notebook_env={"LICENSE": True})),
    Case("env-not-a-mapping", [f"{P}/notebook_env: must be a mapping of variable names to values"], configs=conf(notebook_env=["LICENSE=1"])),
    Case("group-name-too-long", [f"{P}/admin_groups: '{'g' * 40}' is not a group name (printable, at most 128 characters)"],
         configs=conf(admin_groups=["g" * 200], tenant_groups_claim="groups")),
    Case("profile-name-too-long", [f"{P}/notebook_profiles/0/name: must be a name of 1 to 64 printable characters, shown on the spawn page"],
         configs=conf(notebook_profiles=[{"name": "x" * 65}])),
    Case("metrics-url-not-http", [f"{P}/metrics_prometheus_url: must be an http(s) URL such as http://prometheus.example.org:9090"],
         configs=conf(metrics_prometheus_url="ftp://prometheus.example.org")),
    Case("subnet-host-bits", [f"{P}/notebook_network_subnet: 10.128.0.1/19 has bits set after its /19: the network is 10.128.0.0/19"],
         configs=conf(notebook_network_subnet="10.128.0.1/19")),
    Case("subnet-too-large", [f"{P}/notebook_network_subnet: /12 is outside /16 (65,533 addresses) to /26 (61); a /19 holds 8,189"],
         configs=conf(notebook_network_subnet="10.0.0.0/12")),
    Case("subnet-public", [f"{P}/notebook_network_subnet: 8.8.0.0/16 is not a private range (inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 "
                           "or 100.64.0.0/10): notebooks could not reach the public addresses it covers"],
         configs=conf(notebook_network_subnet="8.8.0.0/16")),
    Case("subnet-no-prefix", [f"{P}/notebook_network_subnet: must be an IPv4 network ADDRESS/PREFIX, e.g. 10.128.0.0/19 (8,189 addresses)"],
         configs=conf(notebook_network_subnet="10.128.0.0")),
    Case("subnet-garbage", [f"{P}/notebook_network_subnet: must be an IPv4 network ADDRESS/PREFIX, e.g. 10.128.0.0/19 (8,189 addresses); got 'ten/19'"],
         configs=conf(notebook_network_subnet="ten/19")),
    Case("egress-ipv6", [f"{P}/notebook_egress_deny: entry 1: 'fd00::1': IPv6 is not supported"], configs=conf(notebook_egress_deny=["fd00::1"])),
    Case("egress-bad-cidr", [f"{P}/notebook_egress_deny: entry 1: '10.0.0.0/33': not an IPv4 address, network (CIDR) or host name"],
         configs=conf(notebook_egress_deny=["10.0.0.0/33"])),
    Case("egress-not-text", [f"{P}/notebook_egress_allow: entry 1: must be ADDRESS[/PREFIX][:PORT]"], configs=conf(notebook_egress_allow=[5432])),
    Case("egress-rule-unknown", [f"{P}/notebook_egress_allow_rules: unknown rule 'privateIPs'; the rules are cloud_metadata_server, dns_ports_private_ips, non_private_ips, private_ips"],
         configs=conf(notebook_egress_allow_rules={"privateIPs": True})),
    Case("egress-rule-not-bool", [f"{P}/notebook_egress_allow_rules: private_ips must be true or false, got str"],
         configs=conf(notebook_egress_allow_rules={"private_ips": "yes"})),
    # --- the hub's certificate from an ACME CA
    Case("acme-no-email", [f"{P}/jupyterhub_acme_email: required because jupyterhub_tls is acme"], configs=conf(jupyterhub_tls="acme")),
    Case("acme-bad-email", [f"{P}/jupyterhub_acme_email: must be an email address such as ops@example.org, got 'ops at example'"],
         configs=conf(jupyterhub_tls="acme", jupyterhub_acme_email="ops at example")),
    Case("acme-with-supplied-cert", [f"{P}/jupyterhub_cert: the certificate comes from the ACME CA (jupyterhub_tls: acme)"],
         configs=conf(jupyterhub_tls="acme", jupyterhub_acme_email="ops@example.org", jupyterhub_cert=CERT), passwords=secret(jupyterhub_key=KEY)),
    Case("tls-unknown", [f"{P}/jupyterhub_tls: "], configs=conf(jupyterhub_tls="letsencrypt")),
    Case("acme-directory-http", [f"{P}/jupyterhub_acme_directory: must use https"],
         configs=conf(jupyterhub_tls="acme", jupyterhub_acme_email="ops@example.org", jupyterhub_acme_directory="http://acme.example.org/dir")),
    Case("acme-renew-days-zero", [f"{P}/jupyterhub_acme_renew_days: "],
         configs=conf(jupyterhub_tls="acme", jupyterhub_acme_email="ops@example.org", jupyterhub_acme_renew_days=0)),
    Case("acme-ca-bundle-not-pem", [f"{P}/jupyterhub_acme_ca_bundle: not a PEM bundle of certificates"],
         configs=conf(jupyterhub_tls="acme", jupyterhub_acme_email="ops@example.org", jupyterhub_acme_ca_bundle="acme-ca.pem"),
         files={"extras/acme-ca.pem": "not a certificate\n"}),
    Case("tas-min-id-zero", [f"{P}/tas_min_id: must not be 0: uid/gid 0 is root and is never accepted from TAS; the default is 1000"],
         configs=conf(tas_min_id=0)),
    Case("tas-min-id-negative", [f"{P}/tas_min_id: must be between 1 and 2147483647, got -1"], configs=conf(tas_min_id=-1)),
    Case("tas-min-id-bool", [f"{P}/tas_min_id: must be a whole number, got True"], configs=conf(tas_min_id=True)),
    Case("tas-min-id-float", [f"{P}/tas_min_id: must be a whole number, got 1.5"], configs=conf(tas_min_id=1.5)),
    Case("tas-min-id-string", [f"{P}/tas_min_id: must be a whole number, got 'abc'"], configs=conf(tas_min_id="abc")),
    Case("tas-min-id-quoted", [f"{P}/tas_min_id: must be a whole number, got '1000'"], configs=conf(tas_min_id="1000")),
    Case("tas-min-id-override-bool", ["-o: overrides/tas_min_id: must be a whole number, got True"], args=["-o", "tas_min_id=true"]),
    Case("tas-flag-not-bool", [f"{P}/use_tas_gid: must be a valid boolean, unable to interpret input, got 'maybe'"], configs=conf(use_tas_gid="maybe")),
    # --- notebook limits and images
    Case("cull-bool", [f"{P}/cull_idle_notebook_timeout: must be a valid integer, got True"], configs=conf(cull_idle_notebook_timeout=True)),
    Case("cull-float", [f"{P}/cull_idle_notebook_timeout: must be a valid integer, got 1.5"], configs=conf(cull_idle_notebook_timeout=1.5)),
    Case("start-timeout-bool", [f"{P}/notebook_start_timeout: must be a valid integer, got True"], configs=conf(notebook_start_timeout=True)),
    Case("node-down-timeout-long", [f"{P}/notebook_node_down_timeout: must be less than or equal to 30, got 300"],
         configs=conf(notebook_node_down_timeout=300)),
    Case("start-timeout-short", [f"{P}/notebook_start_timeout: must be greater than or equal to 60, got 5"], configs=conf(notebook_start_timeout=5)),
    Case("cull-negative", [f"{P}/cull_idle_notebook_timeout: must be greater than or equal to 0, got -1"], configs=conf(cull_idle_notebook_timeout=-1)),
    Case("memory-garbage", [f"{P}/notebook_memory_limit: must be a size such as 3G or 512M, got 'lots'"], configs=conf(notebook_memory_limit="lots")),
    Case("memory-too-small", [f"{P}/notebook_memory_limit: must be at least 6M"], configs=conf(notebook_memory_limit="1K")),
    Case("offer-lab-not-bool", [f"{P}/notebook_offer_lab: must be a valid boolean"], configs=conf(notebook_offer_lab="sometimes")),
    Case("hub-image", ["site.configs: jupyterhub/jupyterhub_image: not a valid Docker image reference: 'Bad Image!'"],
         configs=lambda d: d["jupyterhub"].update(jupyterhub_image="Bad Image!")),
    Case("user-image", [f"{P}/jupyter_user_image: not a valid Docker image reference"], configs=conf(jupyter_user_image="taccsciapps/JupyterUser:")),
    # --- servers
    Case("duplicate-host-id", [f'{H}/hosts/2/host_id: duplicate host_id "worker1" (also at {SCOPE}/hosts/1)'], hosts=host(2, host_id="worker1")),
    Case("no-worker", [f"{H}: no host has the worker role"], hosts=both(host(1, roles=["hub"]), host(2, roles=["hub"]), host(1, roles=[]), host(2, roles=[]))),
    Case("no-hub", [f"{H}: no host has the hub role"], hosts=host(0, roles=["worker"])),
    Case("two-hubs", [f"{H}: 2 hosts have the hub role (hub1, worker1)"], hosts=host(1, roles=["hub", "worker"])),
    Case("bad-private-ip", [f'{H}/hosts/1/private_ip: must be an IPv4 or IPv6 address, got "10.0.0.300"'], hosts=host(1, private_ip="10.0.0.300")),
    Case("ssh-port-bool", [f"{H}/hosts/1/ssh_port: must be a valid integer, got True"], hosts=host(1, ssh_port=True)),
    Case("ssh-port-float", [f"{H}/hosts/1/ssh_port: must be a valid integer, got 2222.0"], hosts=host(1, ssh_port=2222.0)),
    Case("private-ip-v6", [f'{H}/hosts/1/private_ip: IPv6 addresses are not supported yet for private_ip (swarm and NFS traffic), got "fd00::10"'],
         hosts=host(1, private_ip="fd00::10")),
    Case("ssh-host-v6-without-private-ip", [f"{H}/hosts/1/ssh_host: is an IPv6 address and no private_ip is set"],
         hosts=host(1, ssh_host="fd00::20", private_ip=None)),
    Case("missing-ssh-host", [f"{H}/hosts/1/ssh_host: required key is missing"], hosts=host(1, ssh_host=None)),
    Case("missing-host-id", [f"{H}/hosts/0/host_id: required: give every host a unique host_id"], hosts=host(0, host_id=None)),
    Case("bad-role", [f"{H}/hosts/0/roles/0: must be 'hub' or 'worker', got 'manager'"], hosts=host(0, roles=["manager"])),
    Case("roles-string", [f"{H}/hosts/0/roles: must be a list such as [hub], not a string"], hosts=host(0, roles="hub")),
    Case("ssh-port-zero", [f"{H}/hosts/0/ssh_port: must be greater than or equal to 1, got 0"], hosts=host(0, ssh_port=0)),
    Case("ssh-key-missing", [f"{H}/hosts/0/ssh_key: file not found:"], hosts=host(0, ssh_key="nope.key")),
    Case("duplicate-private-ip", [f"{H}/hosts/2/private_ip: 10.10.0.11 is also the private_ip of worker1"], hosts=host(2, private_ip="10.10.0.11")),
    Case("hosts-not-list", [f"{H}/hosts: must be a list of hosts"], hosts=lambda d: d[SCOPE].update(hosts={"host_id": "x"})),
    Case("no-hosts", [f"{H}: no hosts for this deployment; add a {SCOPE}: or jupyterhub.prod: or jupyterhub: stanza"],
         hosts=lambda d: d.update({"jupyterhub.staging": d.pop(SCOPE)})),
    Case("bad-ssh-host", [f"{H}/hosts/0/ssh_host: must be a host name or IP address, got 'hub host'"], hosts=host(0, ssh_host="hub host")),
    Case("bad-host-id", [f"{H}/hosts/0/host_id: must be letters, digits"], hosts=host(0, host_id="hub 1")),
    Case("unknown-global", ["site.hosts: ssh_usr: unknown top-level key; did you mean ssh_user?"], hosts=lambda d: d.update(ssh_usr="root")),
    Case("gpus-count-zero", [f"{H}/hosts/1/gpus: a count of GPUs must be between 1 and 64, got 0"], hosts=host(1, gpus=0)),
    Case("gpus-fraction", [f"{H}/hosts/1/gpus: must be a list of GPU device ids or a whole number of GPUs, got 1.5"], hosts=host(1, gpus=1.5)),
    Case("gpus-string", [f"{H}/hosts/1/gpus: must be a list such as [GPU-1a2b], not a string"], hosts=host(1, gpus="GPU-1a2b")),
    Case("gpus-empty", [f"{H}/hosts/1/gpus: must be a non-empty list of GPU device ids (or a count); list the worker's GPU UUIDs"], hosts=host(1, gpus=[])),
    Case("gpus-bad-id", [f"{H}/hosts/1/gpus: 'GPU-a=b' is not a GPU device id: up to 64 letters, digits, '-', '_', '.' or ':' (no '=', ',' or spaces)"],
         hosts=host(1, gpus=["GPU-a=b"])),
    Case("gpus-id-comma", [f"{H}/hosts/1/gpus: 'GPU-a,GPU-b' is not a GPU device id"], hosts=host(1, gpus=["GPU-a,GPU-b"])),
    Case("gpus-id-too-long", [f"{H}/hosts/1/gpus: '{'G' * 65}' is not a GPU device id: up to 64"], hosts=host(1, gpus=["G" * 65])),
    Case("gpus-id-number", [f"{H}/hosts/1/gpus: '0' is a number, which Docker takes as an amount, not a device"], hosts=host(1, gpus=["0", "1"])),
    Case("gpus-id-twice", [f"{H}/hosts/1/gpus: 'GPU-1a' is listed twice; list each GPU once"], hosts=host(1, gpus=["GPU-1a", "GPU-1a"])),
    Case("gpus-not-a-worker", [f"{H}/hosts/0/gpus: only a worker's GPUs are used (notebooks run on workers): add worker to this host's roles, or remove gpus"],
         hosts=host(0, gpus=["GPU-1a"])),
    # --- server options: profiles, roles, resources, named servers, projects, environment
    Case("profile-unknown-key", [f"{P}/notebook_profiles/0/imgae: unknown key; did you mean image?"],
         configs=conf(notebook_profiles=[{"name": "A", "imgae": "a/b:1"}])),
    Case("profile-without-name", [f"{P}/notebook_profiles/0/name: required key is missing"], configs=conf(notebook_profiles=[{"image": "a/b:1"}])),
    Case("profile-bad-image", [f"{P}/notebook_profiles/0/image: not a valid Docker image reference"],
         configs=conf(notebook_profiles=[{"name": "A", "image": "Bad Image"}])),
    Case("profile-name-twice", [f"{P}/notebook_profiles/1/name: 'A' is also the name of notebook_profiles/0"],
         configs=conf(notebook_profiles=[{"name": "A"}, {"name": "A", "cpu_limit": 2}])),
    Case("profile-groups-without-claim", [f"{P}/notebook_profiles/0/groups: groups need the tenant's groups: set tenant_groups_claim"],
         configs=conf(notebook_profiles=[{"name": "A", "groups": ["staff"]}])),
    Case("profile-guarantee-over-limit", [f"{P}/notebook_profiles/0/memory_guarantee: must not be more than the memory limit"],
         configs=conf(notebook_profiles=[{"name": "A", "memory_limit": "1G", "memory_guarantee": "2G"}])),
    Case("profile-cpus-not-a-number", [f"{P}/notebook_profiles/0/cpu_limit: must be a number of CPUs such as 2 or 0.5, got 'lots'"],
         configs=conf(notebook_profiles=[{"name": "A", "cpu_limit": "lots"}])),
    Case("profile-gpus-negative", [f"{P}/notebook_profiles/0/gpus: must be a whole number of GPUs from 0 to 64, got -1"],
         configs=conf(notebook_profiles=[{"name": "A", "gpus": -1}])),
    Case("profile-mount-collides", [f"{P}/notebook_profiles/0/volume_mounts/0: container_path '/home/jupyter/permanent' is already used by volume_mounts"],
         configs=conf(notebook_profiles=[{"name": "A", "volume_mounts": ["/scratch/{username}:/home/jupyter/permanent:rw"]}])),
    Case("profile-mount-needs-tas", [f"{P}/notebook_profiles/0/volume_mounts/0: {{tas_homeDirectory}} needs TAS integration: set use_tas_uid"],
         configs=conf(notebook_profiles=[{"name": "A", "volume_mounts": ["/home/{tas_homeDirectory}:/home/jupyter/home:rw"]}])),
    Case("profile-env-reserved", [f"{P}/notebook_profiles/0/env: JUPYTERHUB_API_TOKEN is set by the hub or the notebook image itself"],
         configs=conf(notebook_profiles=[{"name": "A", "env": {"JUPYTERHUB_API_TOKEN": "x"}}])),
    Case("profiles-not-a-list", [f"{P}/notebook_profiles: must be a list of profiles"], configs=conf(notebook_profiles="GPU")),
    Case("profile-user-not-a-username", [f"{P}/notebook_profiles/0/users: 'Alice Smith' is not a hub username"],
         configs=conf(notebook_profiles=[{"name": "A", "users": ["Alice Smith"]}])),
    Case("admin-users-a-string", [f"{P}/admin_users: must be a list of usernames"], configs=conf(admin_users="jdoe")),
    Case("admin-groups-without-claim", [f"{P}/admin_groups: groups need the tenant's groups: set tenant_groups_claim"], configs=conf(admin_groups=["staff"])),
    Case("groups-claim-with-spaces", [f"{P}/tenant_groups_claim: must not contain whitespace"], configs=conf(tenant_groups_claim="my groups")),
    Case("cpu-guarantee-over-limit", [f"{P}/notebook_cpu_guarantee: must not be more than the CPU limit"],
         configs=conf(notebook_cpu_limit=1, notebook_cpu_guarantee=2)),
    Case("memory-guarantee-not-a-size", [f"{P}/notebook_memory_guarantee: must be a size such as 3G or 512M"], configs=conf(notebook_memory_guarantee="lots")),
    Case("named-server-limit-negative", [f"{P}/named_server_limit_per_user: must be greater than or equal to 0"],
         configs=conf(allow_named_servers=True, named_server_limit_per_user=-1)),
    Case("servername-before-username", [f"{P}/volume_mounts/2: {{servername}} must come after {{username}} in the host path"],
         configs=both(conf(allow_named_servers=True), lambda d: d[SCOPE]["volume_mounts"].append("/data/{servername}:/home/jupyter/s:rw"))),
    Case("servername-in-container-path", [f"{P}/volume_mounts/2: {{servername}} may only be used in the host path"],
         configs=both(conf(allow_named_servers=True), lambda d: d[SCOPE]["volume_mounts"].append("/data/{username}/{servername}:/home/jupyter/{servername}:rw"))),
    Case("project-host-path-without-project-id", [f"{P}/project_mounts/host_path: project_mounts host_path '/corral/projects' must contain {{project_id}}"],
         configs=conf(project_mounts={"host_path": "/corral/projects", "projects": [{"id": "PRJ-1", "name": "One"}]})),
    Case("project-mounts-without-source", [f"{P}/project_mounts: no source of projects"], configs=conf(project_mounts={"host_path": "/corral/{project_id}"})),
    Case("project-id-escapes", [f"{P}/project_mounts/projects/0/id: must be one path component"],
         configs=conf(project_mounts={"host_path": "/corral/{project_id}", "projects": [{"id": "../etc", "name": "x"}]})),
    Case("project-mounts-over-a-mount", [f"{P}/project_mounts/container_path: '/home/jupyter' overlaps a mount of volume_mounts"],
         configs=conf(project_mounts={"host_path": "/corral/{project_id}", "container_path": "/home/jupyter", "api_url": "https://api.example.org/projects"})),
    Case("project-mounts-unknown-key", [f"{P}/project_mounts/api: unknown key; did you mean api_url?"],
         configs=conf(project_mounts={"host_path": "/corral/{project_id}", "api": "https://x.org"})),
    Case("notebook-env-bad-name", [f"{P}/notebook_env: '1BAD' is not an environment variable name"], configs=conf(notebook_env={"1BAD": "x"})),
    Case("secret-env-in-the-configs-file", [f"{P}/notebook_secret_env: holds secret values: move it to the passwords file"],
         configs=conf(notebook_secret_env={"LICENSE_KEY": SECRET_VALUES[0]})),
    Case("secret-env-not-a-string", [f"site.passwords: {SCOPE}/notebook_secret_env: LICENSE_KEY: must be a non-empty string"],
         passwords=secret(notebook_secret_env={"LICENSE_KEY": 27000})),
    # --- overrides
    Case("override-no-equals", ["-o: overrides/0: expected key=value; this item has no '=' (its text is not shown: it may hold a secret)"],
         args=["-o", "novalue"]),
    Case("override-secret-with-colon", ["-o: overrides/0: expected key=value: write jupyterhub_oauth_client_secret=VALUE (the value is not shown)"],
         args=["-o", f"jupyterhub_oauth_client_secret:{SECRET_VALUES[0]}"]),
    Case("override-secret-alone", ["-o: overrides/1: expected key=value; this item has no '='"], args=["-o", f"notebook_offer_lab=true&{SECRET_VALUES[0]}"]),
    Case("override-unknown-key", ["-o: overrides/jupyterhub_hots: unknown key; did you mean jupyterhub_host?"], args=["-o", "jupyterhub_hots=a.org"]),
    Case("override-bad-value", ["-o: overrides/notebook_offer_lab: must be a valid boolean"], args=["-o", "notebook_offer_lab=maybe&x_y=1"]),
]


def _apply(mutation: Mutation | str | None, data: dict) -> Any:
    if mutation is None:
        return data
    if isinstance(mutation, str):
        return mutation
    mutation(data)  # mutations change the data in place
    return data


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_its_path(case: Case, site) -> None:
    s = site(
        configs=_apply(case.configs, base_configs()),
        passwords=_apply(case.passwords, base_passwords()),
        hosts=_apply(case.hosts, base_hosts()),
    )
    for name, text in case.files.items():
        s.write(name, text)
    result = run_cli(["-i", "prod", "-t", "designsafe", *case.args, "validate"], s.path)

    assert result.exit_code == 2, result.output
    for expected in case.expect:
        assert expected in result.stderr, f"expected {expected!r} in:\n{result.stderr}"
    assert "Traceback" not in result.output
    for value in (*SECRET_VALUES, *KEY_LINES):
        assert value not in result.output, "a secret value leaked into the output"


@pytest.mark.parametrize("value", ["*HUNTER2-alias-secret", "!HUNTER2-tag-secret x"])
def test_an_unquoted_secret_starting_with_star_or_bang_is_not_echoed(value: str, site) -> None:
    s = site()
    s.write("site.passwords", f"{SCOPE}:\n  jupyterhub_oauth_client_secret: {value}\n")
    result = run_cli(["-i", "prod", "-t", "designsafe", "validate"], s.path)
    assert result.exit_code == 2 and "must be quoted" in result.stderr
    assert "HUNTER2" not in result.output


def test_a_merge_key_gives_defaults_that_written_keys_override() -> None:
    from deployer.config.yamlfile import YamlProblem, parse

    assert parse("common: &c\n  a: 1\n  b: 2\nx:\n  <<: *c\n  a: 3\n", "f")["x"] == {"a": 3, "b": 2}
    with pytest.raises(YamlProblem, match="duplicate key"):
        parse("x:\n  <<: {a: 1}\n  a: 2\n  a: 3\n", "f")  # written twice is still a duplicate


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


def test_every_problem_is_reported_in_one_run(site) -> None:
    configs = base_configs()
    configs[SCOPE]["volume_mounts"][1] = "/data/shared:/home/jupyter/shared:rx"
    configs[SCOPE]["jupyterhub_host"] = "https://jupyter.example.org"
    hosts = base_hosts()
    hosts[SCOPE]["hosts"][1]["private_ip"] = "999.1.1.1"
    s = site(configs=configs, hosts=hosts)
    result = run_cli(["-i", "prod", "-t", "designsafe", "validate"], s.path)
    assert result.exit_code == 2
    assert "error: 3 problems in the deployment files:" in result.stderr
    assert f'{P}/volume_mounts/1: mode must be ro or rw, got "rx"' in result.stderr
    assert f"{P}/jupyterhub_host: give the domain without the protocol" in result.stderr
    assert f"{H}/hosts/1/private_ip: must be an IPv4 or IPv6 address" in result.stderr


def test_scopes_that_deploy_under_the_same_docker_names_are_refused(site) -> None:
    configs = base_configs()
    configs["jupyterhub.prod.designsafe-x"] = dict(configs[SCOPE], tenant="designsafe")
    configs["jupyterhub.prod-designsafe.x"] = {"tenant": "designsafe"}
    hosts = base_hosts()
    hosts["jupyterhub.prod.designsafe-x"] = hosts[SCOPE]
    passwords = base_passwords()
    passwords["jupyterhub.prod.designsafe-x"] = passwords[SCOPE]
    s = site(configs=configs, hosts=hosts, passwords=passwords)
    result = run_cli(["-i", "prod", "-t", "designsafe-x", "validate"], s.path)
    assert result.exit_code == 2, result.output
    assert ("jupyterhub.prod.designsafe-x: deploys under the same Docker names (jupyterhub-prod-designsafe-x-...) as "
            "jupyterhub.prod-designsafe.x; rename one of the two scopes") in result.stderr
    assert run_cli(["-i", "prod", "-t", "designsafe", "validate"], s.path).exit_code == 0  # the others are fine


def test_a_secret_under_a_non_secret_key_in_the_passwords_file_is_never_shown(site) -> None:
    passwords = base_passwords()
    passwords[SCOPE]["notebook_offer_lab"] = "hunter2-misplaced"  # wrong key: an error about its value
    passwords[SCOPE]["tas_role_account"] = "hunter3-misplaced"  # valid for the key: shown by config
    s = site(passwords=passwords)
    result = run_cli(["-i", "prod", "-t", "designsafe", "validate"], s.path)
    assert result.exit_code == 2 and "notebook_offer_lab: must be a valid boolean" in result.stderr
    assert "hunter2" not in result.output
    passwords[SCOPE].pop("notebook_offer_lab")
    s = site(passwords=passwords)
    shown = run_cli(["-i", "prod", "-t", "designsafe", "config"], s.path)
    assert shown.exit_code == 0, shown.output
    assert "hunter3" not in shown.output
    assert any(line.strip().startswith("tas_role_account:") and "***" in line for line in shown.stdout.splitlines()), shown.stdout


@pytest.mark.parametrize(("where", "apply", "expected"), [
    ("a global of the servers file", lambda d: d.update(ssh_key="nope.key"), "site.hosts: ssh_key: file not found:"),
    ("a default of the scope", lambda d: d[SCOPE].update(ssh_port=True), f"site.hosts: {SCOPE}/ssh_port: must be a valid integer, got True"),
])
def test_a_value_every_host_inherits_is_reported_once_where_it_is_written(site, where: str, apply, expected: str) -> None:
    hosts = base_hosts()
    apply(hosts)
    result = run_cli(["-i", "prod", "-t", "designsafe", "validate"], site(hosts=hosts).path)
    assert result.exit_code == 2
    assert result.stderr.count(expected) == 1, result.stderr
    assert "/hosts/" not in result.stderr, result.stderr  # not once per host, at a path that is not in the file


@pytest.mark.parametrize("where", ["configs", "override", "passwords"])
def test_a_secrets_value_under_any_other_key_is_never_shown(site, where: str) -> None:
    """The client secret's value put (by mistake) under other keys: refused by a validator that quotes
    the value it refuses (notebook_memory_limit), or accepted and shown by config (tas_role_account)."""
    secret = base_passwords()[SCOPE]["jupyterhub_oauth_client_secret"]
    configs, passwords, args = base_configs(), base_passwords(), []
    misplaced = {"notebook_memory_limit": secret, "tas_role_account": secret}
    if where == "configs":
        configs[SCOPE].update(misplaced)
    elif where == "passwords":
        passwords[SCOPE].update(misplaced)
    else:
        args = ["-o", "&".join(f"{k}={v}" for k, v in misplaced.items())]
    s = site(configs=configs, passwords=passwords)
    refused = run_cli(["-i", "prod", "-t", "designsafe", *args, "validate"], s.path)
    assert refused.exit_code == 2 and "notebook_memory_limit: must be a size such as 3G or 512M, got '***'" in refused.stderr, refused.output
    assert secret not in refused.output
    for mapping in (configs, passwords):
        mapping[SCOPE].pop("notebook_memory_limit", None)
    args = ["-o", f"tas_role_account={secret}"] if where == "override" else []
    shown = run_cli(["-i", "prod", "-t", "designsafe", *args, "config"], site(configs=configs, passwords=passwords).path)
    assert shown.exit_code == 0, shown.output
    assert secret not in shown.output
    assert any(line.strip().startswith("tas_role_account:") and "***" in line for line in shown.stdout.splitlines()), shown.stdout
