// examples/kubernetes/sidecar.yaml: valid against the Kubernetes schema (`kubernetes-validate --strict`),
// and the sidecar's own environment starts the real binary the way its probes and its app expect.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { Cleanup, EXAMPLES, findSidekey, findTool, freePort, startSidekey } from "./support.mjs";

const MANIFEST = join(EXAMPLES, "kubernetes", "sidecar.yaml");

/** The manifest's documents, parsed by the Python that kubernetes-validate brings (PyYAML). */
function loadManifest(python) {
  const script = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
  const result = spawnSync(python, ["-c", script, MANIFEST], { encoding: "utf8" });
  assert.equal(result.status, 0, result.stderr);
  return JSON.parse(result.stdout).filter(Boolean);
}

describe("the Kubernetes example", () => {
  const cleanup = new Cleanup();
  let missing = null;
  let validate, docs;

  before(() => {
    const tool = findTool("kubernetes-validate", "python3 -m pip install kubernetes-validate==1.37.0");
    missing = tool.missing;
    if (missing) return;
    validate = tool.path;
    // `.ci/examples.sh` installs kubernetes-validate with `python3 -m pip`: that python3 has its PyYAML.
    docs = loadManifest("python3");
  });

  after(() => cleanup.run());

  function needs(t) {
    if (missing) t.skip(missing);
    return !missing;
  }

  function sidecar() {
    const deployment = docs.find((doc) => doc.kind === "Deployment");
    const pod = deployment.spec.template.spec;
    return { pod, sidekey: pod.initContainers.find((c) => c.name === "sidekey") };
  }

  test("kubernetes-validate --strict accepts every document of the manifest", (t) => {
    if (!needs(t)) return;
    const result = spawnSync(validate, ["--strict", "--kubernetes-version", "1.37.0", MANIFEST], {
      encoding: "utf8",
    });
    const said = `${result.stdout}${result.stderr}`;
    assert.equal(result.status, 0, said);
    for (const kind of ["secret/sidekey-keys", "secret/sidekey-admin", "deployment/chat", "service/chat"]) {
      assert.match(said, new RegExp(`passed for resource ${kind} `), `${kind} was not validated:\n${said}`);
    }
  });

  test("the sidecar is locked down and probed on its admin port", (t) => {
    if (!needs(t)) return;
    const { pod, sidekey } = sidecar();
    assert.equal(sidekey.restartPolicy, "Always", "a native sidecar");
    assert.ok(pod.terminationGracePeriodSeconds > 30, "longer than sidekey's own 30 s shutdown grace");
    assert.equal(pod.securityContext.runAsNonRoot, true);
    for (const container of [sidekey, ...pod.containers]) {
      assert.equal(container.securityContext.readOnlyRootFilesystem, true, container.name);
      assert.deepEqual(container.securityContext.capabilities.drop, ["ALL"], container.name);
      assert.equal(container.securityContext.allowPrivilegeEscalation, false, container.name);
      assert.ok(container.resources.requests && container.resources.limits, container.name);
    }
    const env = Object.fromEntries(sidekey.env.filter((e) => "value" in e).map((e) => [e.name, e.value]));
    assert.match(env.SIDEKEY_LISTEN, /^127\.0\.0\.1:/, "the session API and proxy stay inside the pod");
    const adminPort = Number(env.SIDEKEY_ADMIN_LISTEN.split(":").pop());
    assert.deepEqual(sidekey.ports.map((p) => p.containerPort), [adminPort]);
    assert.equal(sidekey.readinessProbe.httpGet.path, "/readyz");
    assert.equal(sidekey.livenessProbe.httpGet.path, "/healthz");
    const adminToken = sidekey.env.find((e) => e.name === "SIDEKEY_ADMIN_TOKEN");
    assert.equal(adminToken.valueFrom.secretKeyRef.name, "sidekey-admin");
    assert.ok(sidekey.envFrom.some((source) => source.secretRef?.name === "sidekey-keys"));
    const service = docs.find((doc) => doc.kind === "Service");
    assert.ok(!service.spec.ports.some((p) => p.targetPort === adminPort || p.targetPort === "sidekey-admin"));
  });

  test("the sidecar's environment starts sidekey: probes on the admin port, sessions on localhost only", async (t) => {
    if (!needs(t)) return;
    const bin = findSidekey();
    if (bin.missing) return t.skip(bin.missing);
    const { sidekey } = sidecar();
    const secretData = (name) => docs.find((doc) => doc.kind === "Secret" && doc.metadata.name === name).stringData;
    const env = {
      ...Object.fromEntries(sidekey.env.filter((e) => "value" in e).map((e) => [e.name, e.value])),
      ...secretData("sidekey-keys"),
      SIDEKEY_ADMIN_TOKEN: secretData("sidekey-admin").token,
    };
    // The manifest's ports, moved to free ones: tests share the machine.
    const adminPort = await freePort();
    env.SIDEKEY_ADMIN_LISTEN = `127.0.0.1:${adminPort}`;
    env.SIDEKEY_LISTEN = "127.0.0.1:0";
    const running = await startSidekey(cleanup, bin.path, env);
    const admin = `http://127.0.0.1:${adminPort}`;
    for (const probe of [sidekey.readinessProbe, sidekey.livenessProbe, sidekey.startupProbe]) {
      const answer = await fetch(`${admin}${probe.httpGet.path}`);
      assert.equal(answer.status, 200, `${probe.httpGet.path} on the admin port`);
    }
    const onAdminPort = await fetch(`${admin}/v1/sessions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ secret_key_id: "openai-prod" }),
    });
    assert.equal(onAdminPort.status, 404, "the admin port (reachable from the cluster) issues no sessions");
    const issued = await fetch(`${running.url}/v1/sessions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ secret_key_id: "openai-prod" }),
    });
    assert.equal(issued.status, 201, "the app issues sessions on the local port with the Secret's key");
  });
});
