"""AutoRTC: end-to-end regression of the voice agent over real WebRTC (docs/AUTORTC.md)."""
