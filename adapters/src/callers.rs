//! Caller credentials: JWTs (JWKS or HS256) and Better Auth session tokens.
