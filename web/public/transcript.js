// Live transcript of both sides from livekit-agents' `lk.transcription` text streams.
//
// The agent publishes two kinds of stream on that topic, both tagged with `lk.segment_id`:
//  * its own speech as ONE stream per segment whose chunks are deltas; the closing trailer adds
//    `lk.transcription_final: "true"` to the stream's attributes;
//  * the user's speech (sent with the user's identity as sender) as one short stream per update,
//    each holding the whole text so far, the last one marked final in its header.
// Treating "this stream's accumulated text" as the segment's current text covers both.

export const TRANSCRIPTION_TOPIC = 'lk.transcription';
const SEGMENT_ID = 'lk.segment_id';
const FINAL = 'lk.transcription_final';

export function attachTranscription(room, view) {
  room.registerTextStreamHandler(TRANSCRIPTION_TOPIC, async (reader, participantInfo) => {
    const identity = participantInfo?.identity ?? '';
    // only the agent speaks as "agent": any participant may publish on this topic, and another
    // one's stream must not be shown as the agent's words
    const fromAgent = Boolean(room.remoteParticipants?.get?.(identity)?.isAgent);
    const speaker = identity === room.localParticipant?.identity ? 'user' : fromAgent ? 'agent' : null;
    if (speaker === null) {
      console.warn(`ignoring a transcription stream from ${identity}: not the agent`);
      return;
    }
    const segment = `${identity}/${reader.info.attributes?.[SEGMENT_ID] ?? reader.info.id}`;
    const isFinal = () => reader.info.attributes?.[FINAL] === 'true';
    let text = '';
    try {
      for await (const chunk of reader) {
        text += chunk;
        if (text) view.upsertLine(segment, speaker, text, isFinal());
      }
    } catch (err) {
      console.warn('transcription stream ended abnormally', err);
    }
    if (text) view.upsertLine(segment, speaker, text, isFinal());
  });
}
