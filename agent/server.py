"""A module-level `server` for livekit's own launchers: `lk agent dev/start` and
`python -m livekit.agents start agent/server.py` import this file and run `server`.

`python -m agent start|dev|connect|console` is the same worker through livekit-agents' in-process CLI.
"""

from .worker import define_voice_agent

server = define_voice_agent()
