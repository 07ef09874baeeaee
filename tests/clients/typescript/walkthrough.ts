// The README walkthrough through a client generated from openapi/openapi.json: issue, read, refresh,
// verify, admin list, revoke. `tsc --noEmit` type-checks it against the generated `schema.d.ts` (so a
// field the document gets wrong, such as a nullable `subject` declared as a plain string, fails to
// compile where it is used as the server sends it), then it runs against the real binary.
//
//   SIDEKEY_URL=http://127.0.0.1:8080 SIDEKEY_ADMIN_TOKEN=… node walkthrough.js
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Session = components["schemas"]["Session"];
type IssuedSession = components["schemas"]["IssuedSession"];

// These compile only while the document says what the server sends: `subject` is always present, and
// null for a session issued without a caller.
const nullSubject: IssuedSession["subject"] = null;
const nullSessionSubject: Session["subject"] = null;
type Present<T, K extends keyof T> = {} extends Pick<T, K> ? false : true;
const subjectAlwaysSent: Present<IssuedSession, "subject"> & Present<Session, "subject"> = true;
void [nullSubject, nullSessionSubject, subjectAlwaysSent];

const base = process.env.SIDEKEY_URL!;
const adminToken = process.env.SIDEKEY_ADMIN_TOKEN!;
const secretKeyId = process.env.SIDEKEY_SECRET_KEY_ID ?? "openai-prod";

function check(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Error(`walkthrough: ${what}`);
}

// The document says `subject` may be null: a string-only type would not accept this assignment.
function subjectOf(session: Session): string | null {
  const subject: string | null | undefined = session.subject;
  return subject ?? null;
}

async function main(): Promise<void> {
  const client = createClient<paths>({ baseUrl: base });

  const issued = await client.POST("/v1/sessions", {
    body: { secret_key_id: secretKeyId, ttl_seconds: 600, metadata: { app: "walkthrough" } },
  });
  check(issued.response.status === 201 && issued.data !== undefined, `issue: ${issued.response.status}`);
  const token = issued.data.token;
  check(issued.data.token_type === "Bearer", "token_type");
  check(issued.data.subject === null, "a session without a caller has a null subject");
  check(issued.response.headers.get("cache-control") === "no-store", "issue: Cache-Control");
  const auth = { headers: { Authorization: `Bearer ${token}` } };

  const shown = await client.GET("/v1/session", auth);
  check(shown.response.status === 200 && shown.data !== undefined, `read: ${shown.response.status}`);
  check(shown.data.session_id === issued.data.session_id, "read: the same session");
  check(subjectOf(shown.data) === null, "read: subject");
  check(shown.data.metadata.app === "walkthrough", "read: metadata");

  const refreshed = await client.POST("/v1/session/refresh", auth);
  check(refreshed.response.status === 200 && refreshed.data !== undefined, "refresh");
  check(refreshed.data.expires_in <= 600, "refresh: the session's own ttl");

  const verified = await client.GET("/v1/auth/verify", auth);
  check(verified.response.status === 200, `verify: ${verified.response.status}`);
  check(verified.response.headers.get("x-sidekey-session-id") === issued.data.session_id, "verify: header");

  const admin = { headers: { Authorization: `Bearer ${adminToken}` } };
  const listed = await client.GET("/v1/admin/sessions", {
    ...admin,
    params: { query: { secret_key_id: secretKeyId, limit: 100 } },
  });
  check(listed.response.status === 200 && listed.data !== undefined, `admin list: ${listed.response.status}`);
  const mine = listed.data.sessions.find((session) => session.session_id === issued.data.session_id);
  check(mine !== undefined, "admin list: the session is listed");
  check(mine.remaining === undefined, "admin list: no `remaining`");

  const revoked = await client.DELETE("/v1/session", auth);
  check(revoked.response.status === 204, `revoke: ${revoked.response.status}`);
  const after = await client.GET("/v1/session", auth);
  check(after.response.status === 401 && after.error !== undefined, "revoked: 401");
  check(after.error.code === "invalid_token", `revoked: ${after.error.code}`);

  const other = await client.POST("/v1/sessions", { body: { secret_key_id: secretKeyId } });
  check(other.data !== undefined, "a second session");
  const rotated = await client.POST("/v1/admin/revocations", { ...admin, body: { secret_key_id: secretKeyId } });
  check(rotated.response.status === 200 && rotated.data !== undefined && rotated.data.revoked >= 1, "rotate");
  console.log("typescript walkthrough: ok");
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
