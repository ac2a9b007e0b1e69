"""JWT token API for LiveKit rooms, and static hosting of the browser client."""
