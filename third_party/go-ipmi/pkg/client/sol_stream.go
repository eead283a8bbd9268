package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/types"
)

// SOLStreamOptions configures [Client.SOLStream].
type SOLStreamOptions struct {
	// PollInterval is how often to send an empty SOL packet to poll for inbound data.
	// Zero selects a default (100ms).
	PollInterval time.Duration
	// IdlePollInterval (labctl's patch), when above PollInterval, makes
	// polling adaptive: the wait doubles after each poll that brought no
	// output, up to IdlePollInterval, and drops back to PollInterval when
	// output arrives or input is sent. The stream also wakes as soon as a
	// datagram arrives from the BMC, which sends console output without
	// being asked (spec v2.0 §15.9), where the platform lets it wait for
	// one; then output and input do not bring the wait back to
	// PollInterval, and polls only show the session is alive. An idle
	// console costs a poll every IdlePollInterval, and so does a busy one.
	IdlePollInterval time.Duration
	// Answered (labctl's patch), if set, is called after each SOL packet
	// exchange the BMC answered and whose answer was taken, and after SOL
	// packets the BMC sent unasked were read: proof that the payload was
	// active on this session then.
	Answered func()
}

const (
	defaultSOLTransmitRetryCount        = 3
	defaultSOLTransmitRetryInterval     = 100 * time.Millisecond
	defaultSOLAcknowledgementRetryCount = 3
	solSequenceMask                     = 0x0f
	// Sequence numbers wrap from 15 to 1, so 0 is not part of the cycle and the
	// cycle holds 15 values. A packet more than half the cycle ahead of the last
	// one received is read as trailing it rather than skipping past it.
	solSequenceSpace         = 15
	solSequenceHalfSpace     = solSequenceSpace / 2
	solStatusDeactivating    = 1 << 4 // IPMI v2.0 Table 15-2, status bit 4
	solStatusTransmitOverrun = 1 << 3 // IPMI v2.0 Table 15-2, status bit 3
)

// SOLStream exchanges console data over an already active SOL payload. Input is transmitted
// unchanged, unlike [Client.SOLActivate], this method does not interpret terminal escape sequences
// or process signals.
func (c *Client) SOLStream(ctx context.Context, in io.Reader, out io.Writer, opts *SOLStreamOptions) error {
	pollInterval := defaultPollInterval
	if opts != nil && opts.PollInterval > 0 {
		pollInterval = opts.PollInterval
	}

	stream := c.newSOLStream(in, out, pollInterval, nil)
	if opts != nil && opts.IdlePollInterval > pollInterval {
		stream.idlePollInterval = opts.IdlePollInterval
	}
	if opts != nil {
		stream.answered = opts.Answered
	}
	return c.runStream(ctx, stream)
}

type solConsoleInput struct {
	value byte
	err   error
}

type solStream struct {
	client       *Client
	input        io.Reader
	output       io.Writer
	pollInterval time.Duration
	// idlePollInterval is the longest wait between polls; 0 polls every
	// pollInterval.
	idlePollInterval time.Duration
	// answered is SOLStreamOptions.Answered (labctl's patch).
	answered  func()
	interrupt <-chan os.Signal
	// delivered counts output bytes written to output.
	delivered int
	// wake is signalled when output another exchange received is waiting
	// in pendingOutput.
	wake chan struct{}

	localSequenceNumber  uint8
	remoteSequenceNumber uint8
	acceptedCharCount    uint8
	outputAckPending     bool
	// pushed says the stream is woken by the BMC's datagrams: it takes the
	// output the BMC sends unasked, and acknowledges with ACK-only packets
	// (labctl's patch), unless ackOnlyIgnored: the BMC resent a packet so
	// acknowledged more than defaultSOLAcknowledgementRetryCount times.
	pushed         bool
	ackedOnly      ackOnlyState
	ackOnlyIgnored bool

	pendingOutputMu sync.Mutex
	pendingOutput   []*types.SOLPayloadResponse
}

// ackOnlyState is the last BMC packet an ACK-only packet acknowledged,
// and how many times it came again since (labctl's patch).
type ackOnlyState struct {
	seq, count uint8
	repeats    int
}

// nextSOLSequenceNumber returns the next SOL sequence number, wrapping from 15 to 1.
func nextSOLSequenceNumber(sequenceNumber uint8) uint8 {
	sequenceNumber = (sequenceNumber + 1) & solSequenceMask
	if sequenceNumber == 0 {
		return 1
	}

	return sequenceNumber
}

// solSequenceDistance returns how many steps separate sequenceNumber from
// previous, counting forward through the wrapping sequence space. Both must be
// valid data sequence numbers (1 to 15). A result above solSequenceHalfSpace
// means sequenceNumber trails previous.
func solSequenceDistance(sequenceNumber, previous uint8) uint8 {
	return uint8((int(sequenceNumber) - int(previous) + solSequenceSpace) % solSequenceSpace)
}

func (s *solStream) processOutput(response *types.SOLPayloadResponse) error {
	if response == nil {
		return fmt.Errorf("nil SOL payload response")
	}

	// These status bits mean the stream cannot deliver complete console output.
	if response.ControlByte&solStatusDeactivating != 0 {
		return fmt.Errorf("BMC reported SOL deactivation")
	}

	if response.ControlByte&solStatusTransmitOverrun != 0 {
		return fmt.Errorf("BMC reported SOL transmit overrun, console output was lost")
	}

	sequenceNumber := response.SequenceNumber & solSequenceMask
	data := response.CharacterData
	// Sequence number zero acknowledges console input and must not carry BMC output.
	if sequenceNumber == 0 {
		if len(data) != 0 {
			return fmt.Errorf("BMC sent %d SOL data bytes with ACK-only sequence 0", len(data))
		}
		return nil
	}

	// AcceptedCharacterCount is one byte, so larger packets cannot be acknowledged.
	if len(data) > 255 {
		return fmt.Errorf("BMC sent %d SOL data bytes, acknowledgement count is limited to 255", len(data))
	}

	writeOffset := 0
	switch {
	// No BMC output sequence has been received yet.
	case s.remoteSequenceNumber == 0:
	case sequenceNumber == s.remoteSequenceNumber:
		// A retransmission may append data. Write only bytes not previously delivered.
		if len(data) < int(s.acceptedCharCount) {
			return fmt.Errorf("BMC shortened retried SOL sequence %d from %d to %d bytes",
				sequenceNumber, s.acceptedCharCount, len(data))
		}
		writeOffset = int(s.acceptedCharCount)
	case sequenceNumber == nextSOLSequenceNumber(s.remoteSequenceNumber):
	case solSequenceDistance(sequenceNumber, s.remoteSequenceNumber) > solSequenceHalfSpace:
		// The BMC retransmits unacknowledged output (spec v2.0 §15.9) reusing the
		// original sequence number, so a packet trailing the current one is a
		// duplicate sent before our acknowledgement arrived. Its data was already
		// delivered, and it says nothing about what the BMC has since accepted, so
		// drop it without disturbing the acknowledgement bookkeeping.
		return nil
	default:
		// A gap means BMC output was lost before it reached the writer.
		return fmt.Errorf("unexpected BMC SOL sequence %d after %d", sequenceNumber, s.remoteSequenceNumber)
	}

	dataToWrite := data[writeOffset:]
	if len(dataToWrite) > 0 {
		n, err := s.output.Write(dataToWrite)
		if err != nil {
			return fmt.Errorf("write SOL output: %w", err)
		}

		if n != len(dataToWrite) {
			return fmt.Errorf("write SOL output: %w", io.ErrShortWrite)
		}
	}
	s.delivered += len(dataToWrite)
	s.remoteSequenceNumber = sequenceNumber
	s.acceptedCharCount = uint8(len(data))
	s.outputAckPending = true

	return nil
}

func (c *Client) registerSOLStream(stream *solStream) error {
	c.lock()
	defer c.unlock()
	if c.activeSOLStream != nil {
		return fmt.Errorf("SOL stream is already active")
	}
	c.activeSOLStream = stream
	return nil
}

func (c *Client) unregisterSOLStream() {
	c.lock()
	defer c.unlock()
	c.activeSOLStream = nil
}

func (c *Client) deliverSOLOutput(response *types.SOLPayloadResponse) {
	c.lock()
	stream := c.activeSOLStream
	c.unlock()
	if stream != nil {
		stream.queueOutput(response)
	}
}

func (s *solStream) queueOutput(response *types.SOLPayloadResponse) {
	s.pendingOutputMu.Lock()
	defer s.pendingOutputMu.Unlock()
	s.pendingOutput = append(s.pendingOutput, response)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *solStream) takePendingOutput() []*types.SOLPayloadResponse {
	select {
	case <-s.wake: // taken now, so no need to wake for it
	default:
	}
	s.pendingOutputMu.Lock()
	defer s.pendingOutputMu.Unlock()
	responses := s.pendingOutput
	s.pendingOutput = nil
	return responses
}

func readSOLInput(ctx context.Context, in io.Reader) <-chan solConsoleInput {
	events := make(chan solConsoleInput, 256)
	go func() {
		reader := bufio.NewReader(in)
		for {
			value, err := reader.ReadByte()
			if ctx.Err() != nil {
				return
			}
			event := solConsoleInput{value: value, err: err}
			select {
			case events <- event:
			case <-ctx.Done():
				return
			}

			if err != nil {
				return
			}
		}
	}()
	return events
}

func (c *Client) runSOLStream(
	ctx context.Context,
	in io.Reader,
	out io.Writer,
	pollInterval time.Duration,
	interrupt <-chan os.Signal,
) error {
	return c.runStream(ctx, c.newSOLStream(in, out, pollInterval, interrupt))
}

func (c *Client) newSOLStream(in io.Reader, out io.Writer, pollInterval time.Duration, interrupt <-chan os.Signal) *solStream {
	return &solStream{
		client:              c,
		input:               in,
		output:              out,
		pollInterval:        pollInterval,
		interrupt:           interrupt,
		localSequenceNumber: 1,
		wake:                make(chan struct{}, 1),
	}
}

func (c *Client) runStream(ctx context.Context, stream *solStream) error {
	if err := c.registerSOLStream(stream); err != nil {
		return err
	}
	defer c.unregisterSOLStream()

	return stream.run(ctx)
}

func (s *solStream) exchangePacket(ctx context.Context, chars []byte) (*types.SOLPayloadResponse, error) {
	req := &types.SOLPayloadRequest{
		SOLPayloadPacket: types.SOLPayloadPacket{
			SequenceNumber:         s.localSequenceNumber,
			AckedSequenceNumber:    s.remoteSequenceNumber,
			AcceptedCharacterCount: s.acceptedCharCount,
			CharacterData:          chars,
		},
	}
	res, err := s.client.SOLPayload(ctx, req)
	if err != nil {
		return nil, err
	}
	s.localSequenceNumber = nextSOLSequenceNumber(s.localSequenceNumber)
	// The request carried the acknowledgement for output received so far.
	s.outputAckPending = false

	for _, pending := range s.takePendingOutput() {
		if err := s.processOutput(pending); err != nil {
			return nil, err
		}
	}

	if err := s.processOutput(res); err != nil {
		return nil, err
	}
	if s.answered != nil {
		s.answered()
	}
	return res, nil
}

// takeOutput processes the SOL packets queued for the stream after
// readPushedSOL read n of them (labctl's patch).
func (s *solStream) takeOutput(n int) error {
	for _, pending := range s.takePendingOutput() {
		if err := s.processOutput(pending); err != nil {
			return err
		}
	}
	if n > 0 && s.answered != nil {
		s.answered()
	}
	return nil
}

// acknowledgeOutput immediately acknowledges and drains BMC console output.
// While the stream is woken by the BMC's datagrams, it sends an ACK-only
// packet (sequence 0h), which the BMC does not answer (spec v2.0 §15.11),
// as ipmitool does: the BMC sends its next output unasked, and resends
// output whose ACK was lost (labctl's patch: upstream sent an empty data
// packet and waited for its answer, two more datagrams for every packet of
// output, and the answer often carried the next output to acknowledge
// again).
func (s *solStream) acknowledgeOutput(ctx context.Context) error {
	if s.pushed && !s.ackOnlyIgnored && s.outputAckPending {
		// A BMC that keeps resending the packet ACK-only packets
		// acknowledged does not take them: acknowledge with exchanges.
		if s.remoteSequenceNumber == s.ackedOnly.seq && s.acceptedCharCount == s.ackedOnly.count {
			s.ackedOnly.repeats++
		} else {
			s.ackedOnly = ackOnlyState{seq: s.remoteSequenceNumber, count: s.acceptedCharCount}
		}
		if s.ackedOnly.repeats > defaultSOLAcknowledgementRetryCount {
			s.ackOnlyIgnored = true
			return s.acknowledgeOutput(ctx)
		}
		req := &types.SOLPayloadRequest{
			SOLPayloadPacket: types.SOLPayloadPacket{
				AckedSequenceNumber:    s.remoteSequenceNumber,
				AcceptedCharacterCount: s.acceptedCharCount,
			},
		}
		if err := s.client.sendSOL(ctx, req); err != nil {
			return err
		}
		s.outputAckPending = false
		return nil
	}
	repeatedResponses := 0
	for s.outputAckPending {
		previousSequenceNumber := s.remoteSequenceNumber
		previousAcceptedCharCount := s.acceptedCharCount

		// A nonzero empty packet carries the acknowledgement and requires a response from the BMC.
		_, err := s.exchangePacket(ctx, nil)
		if err != nil {
			return err
		}

		if s.outputAckPending &&
			s.remoteSequenceNumber == previousSequenceNumber &&
			s.acceptedCharCount == previousAcceptedCharCount {
			repeatedResponses++
			if repeatedResponses > defaultSOLAcknowledgementRetryCount {
				return fmt.Errorf("BMC repeated SOL sequence %d after %d acknowledgement retries",
					s.remoteSequenceNumber, defaultSOLAcknowledgementRetryCount)
			}
		} else {
			repeatedResponses = 0
		}
	}
	return nil
}

func (s *solStream) sendPacket(ctx context.Context, chars []byte) (*types.SOLPayloadResponse, error) {
	response, err := s.exchangePacket(ctx, chars)
	if err != nil {
		return nil, err
	}
	if err := s.acknowledgeOutput(ctx); err != nil {
		return nil, err
	}
	return response, nil
}

func (s *solStream) sendData(ctx context.Context, chars []byte) error {
	pending := chars
	noProgressRetries := 0
	for len(pending) > 0 {
		// Retry only the data the BMC did not accept, using a fresh SOL sequence.
		res, err := s.sendPacket(ctx, pending)
		if err != nil {
			return err
		}

		// The accepted count applies only to the data in this request.
		accepted := int(res.AcceptedCharacterCount)
		if accepted > len(pending) {
			return fmt.Errorf("BMC acknowledged %d characters for a %d-byte SOL packet", accepted, len(pending))
		}

		if accepted > 0 {
			// Any progress resets the consecutive no-progress retry budget.
			noProgressRetries = 0
		} else {
			noProgressRetries++
		}

		// Remove the accepted data from the pending buffer.
		pending = pending[accepted:]
		if len(pending) == 0 {
			return nil
		}

		// If the BMC did not accept any data, retry up to a limit.
		if noProgressRetries > defaultSOLTransmitRetryCount {
			return fmt.Errorf("BMC did not accept %d SOL data byte(s) after %d retries",
				len(pending), defaultSOLTransmitRetryCount)
		}

		// Wait before retrying.
		timer := time.NewTimer(defaultSOLTransmitRetryInterval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
	return nil
}

func (s *solStream) run(ctx context.Context) error {
	inputCtx, cancelInput := context.WithCancel(ctx)
	defer cancelInput()

	input := readSOLInput(inputCtx, s.input)
	interval := s.pollInterval
	timer := time.NewTimer(interval)
	defer timer.Stop()
	var readable <-chan struct{}
	var resume chan<- struct{}
	if s.idlePollInterval > s.pollInterval {
		readable, resume = s.watchReadable(inputCtx)
	}

	if _, err := s.sendPacket(ctx, nil); err != nil {
		return err
	}

	// While the stream is woken by the BMC's datagrams, output and input
	// do not bring polling back to pollInterval: the BMC sends output
	// unasked (spec v2.0 §15.9; ipmitool, which never polls, relies on
	// it), and polls only show the session is alive, backing off as on a
	// quiet console. A poll that raced the BMC's own send would otherwise
	// take the output first, every time, and keep the stream polling.
	// Without wakes (no peeking here, or the watch ended), output and
	// input bring polling back to pollInterval.
	watching := readable != nil
	s.pushed = watching
	// Output the BMC sends unasked shows only that it sends: a poll it
	// answers, at least every maxIdle, shows the session works both ways.
	maxIdle := max(s.idlePollInterval, s.pollInterval)
	polled := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.interrupt:
			return nil
		case consoleInput := <-input:
			if consoleInput.err != nil {
				if consoleInput.err == io.EOF {
					return nil
				}
				return consoleInput.err
			}

			chars, inErr := s.batchInput(consoleInput.value, input)
			if err := s.sendData(ctx, chars); err != nil {
				return err
			}
			polled = time.Now()
			if inErr == io.EOF {
				return nil
			}
			if inErr != nil {
				return inErr
			}
			if !watching {
				interval = s.pollInterval
			}
			timer.Reset(interval)
			continue
		case _, ok := <-readable:
			if !ok {
				// The watch ended: back to polling alone.
				readable, watching, s.pushed = nil, false, false
				interval = s.pollInterval
				timer.Reset(interval)
				continue
			}
			// Take what the BMC sent, and acknowledge its output,
			// without asking: nothing waiting means an exchange
			// meanwhile took the datagram (its own answer, or output
			// it delivered). A socket that cannot be read without
			// waiting cannot be watched either: the watch ends.
			read, err := s.client.readPushedSOL()
			if err != nil && !errors.Is(err, errors.ErrUnsupported) {
				return err
			}
			if err := s.takeOutput(read); err != nil {
				return err
			}
			if err := s.acknowledgeOutput(ctx); err != nil {
				return err
			}
			if err := s.resumeWatch(ctx, resume); err != nil {
				return err
			}
			if read > 0 {
				// The BMC was heard from: the next poll can wait
				// longer, but not past maxIdle from the last one.
				interval = min(2*interval, maxIdle)
				timer.Reset(min(interval, time.Until(polled.Add(maxIdle))))
			}
			continue
		case <-s.wake:
		case <-timer.C:
		}
		before := s.delivered
		if _, err := s.sendPacket(ctx, nil); err != nil {
			return err
		}
		polled = time.Now()
		switch {
		case s.delivered != before && !watching:
			interval = s.pollInterval
		case s.idlePollInterval > s.pollInterval:
			interval = min(2*interval, s.idlePollInterval)
		}
		timer.Reset(interval)
	}
}

// solInputBatch bounds the input bytes sent in one SOL packet: fewer than
// any BMC's inbound payload size.
const solInputBatch = 32

// batchInput returns first and the input bytes already waiting after it
// (at most solInputBatch in all), to go in one SOL packet, and the input's
// error if it came among them (labctl's patch: upstream sent one packet,
// an exchange with the BMC, per byte).
func (s *solStream) batchInput(first byte, input <-chan solConsoleInput) ([]byte, error) {
	chars := []byte{first}
	for len(chars) < solInputBatch {
		select {
		case more := <-input:
			if more.err != nil {
				return chars, more.err
			}
			chars = append(chars, more.value)
		default:
			return chars, nil
		}
	}
	return chars, nil
}

// watchReadable tells the stream (on readable) when a datagram from the BMC
// is waiting, then waits for it to have polled (resume) before watching
// again (labctl's patch). It ends with ctx, or when the connection cannot
// be watched: the stream then only polls.
func (s *solStream) watchReadable(ctx context.Context) (<-chan struct{}, chan<- struct{}) {
	readable := make(chan struct{})
	resume := make(chan struct{})
	go func() {
		defer close(readable)
		for {
			if err := s.client.udpClient.WaitReadable(ctx); err != nil {
				return
			}
			select {
			case readable <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case <-resume:
			case <-ctx.Done():
				return
			}
		}
	}()
	return readable, resume
}

// resumeWatch lets the watch of watchReadable go on after a wake.
func (s *solStream) resumeWatch(ctx context.Context, resume chan<- struct{}) error {
	select {
	case resume <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
