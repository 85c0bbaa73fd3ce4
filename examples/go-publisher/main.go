// A statestore producer in Go, written from docs/events.md alone: it publishes field
// updates, an object replace and a packed batch through its own Dapr sidecar's HTTP API,
// with no statestore or Dapr library.
//
//	DAPR_HTTP_PORT=3500 STATESTORE_APP_NAME=go-app go run . -id wf-1 -fields 5
//
// It prints one JSON line: the producer id and the state the subscriber should end with.
// -poison also sends one malformed event and one with an unsafe id (both must go to the
// dead-letter topic) before the good ones.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// Producer stamps events: one identity per process, a sequence per state from 1 with no
// gap, and a hybrid logical clock that never goes back.
type Producer struct {
	mu       sync.Mutex
	id, app  string
	seq      map[string]int
	lastWall int64
	logical  int64
}

func NewProducer(app string) *Producer {
	host, _ := os.Hostname()
	if len(host) > 24 {
		host = host[:24]
	}
	random := make([]byte, 4)
	_, _ = rand.Read(random)
	return &Producer{id: fmt.Sprintf("go-%s-%d-%s", host, os.Getpid(), hex.EncodeToString(random)), app: app, seq: map[string]int{}}
}

// stamp returns the common fields of the next event for one state.
func (p *Producer) stamp(stateType, stateID string) map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := stateType + "/" + stateID
	p.seq[key]++
	wall := time.Now().UnixMilli()
	if wall > p.lastWall {
		p.lastWall, p.logical = wall, 0
	} else {
		p.logical++
	}
	return map[string]any{
		"schema_version": 2, "app": p.app, "state_id": stateID, "state_type": stateType,
		"producer": p.id, "seq": p.seq[key], "hlc": []int64{p.lastWall, p.logical},
	}
}

func (p *Producer) FieldUpdated(stateType, stateID, field string, value any) map[string]any {
	event := p.stamp(stateType, stateID)
	event["kind"], event["field"], event["value"] = "field_updated", field, value
	return event
}

func (p *Producer) ObjectReplaced(stateType, stateID string, value map[string]any) map[string]any {
	event := p.stamp(stateType, stateID)
	event["kind"], event["value"] = "object_replaced", value
	return event
}

// stateKey is the state-store key: {type}/{id} for the app "default", else {app}/{type}/{id}.
func stateKey(event map[string]any) string {
	key := fmt.Sprintf("%s/%s", event["state_type"], event["state_id"])
	if app, _ := event["app"].(string); app != "" && app != "default" {
		key = app + "/" + key
	}
	return key
}

// CloudEvent wraps one event: type names kind and version, id is producer:key:seq.
func CloudEvent(event map[string]any) map[string]any {
	return map[string]any{
		"specversion": "1.0", "source": "statestore", "datacontenttype": "application/json",
		"type": fmt.Sprintf("io.statestore.%s.v2", event["kind"]),
		"id":   fmt.Sprintf("%s:%s:%v", event["producer"], stateKey(event), event["seq"]),
		"data": event,
	}
}

// Batch packs several events into one io.statestore.event_batch.v1 CloudEvent.
func Batch(id string, events []map[string]any) map[string]any {
	return map[string]any{
		"specversion": "1.0", "source": "statestore", "datacontenttype": "application/json",
		"type": "io.statestore.event_batch.v1", "id": id,
		"data": map[string]any{"schema_version": 1, "events": events},
	}
}

// Sidecar publishes structured CloudEvents through the Dapr HTTP API.
type Sidecar struct{ base, token string }

func (s Sidecar) Publish(cloudEvent map[string]any) error {
	body, err := json.Marshal(cloudEvent)
	if err != nil {
		return err
	}
	req, _ := http.NewRequest(http.MethodPost, s.base+"/v1.0/publish/pubsub/statestore-events", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	if s.token != "" {
		req.Header.Set("dapr-api-token", s.token)
	}
	for attempt := 0; ; attempt++ { // retry a sidecar that is restarting: the merge is idempotent
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			err = fmt.Errorf("sidecar answered %s", resp.Status)
		}
		if attempt == 20 {
			return err
		}
		time.Sleep(time.Duration(50<<min(attempt, 5)) * time.Millisecond)
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
}

func main() {
	stateID := flag.String("id", "go-wf-1", "state id")
	fields := flag.Int("fields", 5, "field updates after the object replace")
	poison := flag.Bool("poison", false, "also send a malformed event and one with an unsafe id")
	flag.Parse()
	port := os.Getenv("DAPR_HTTP_PORT")
	if port == "" {
		port = "3500"
	}
	app := os.Getenv("STATESTORE_APP_NAME")
	if app == "" {
		app = "default"
	}
	sidecar := Sidecar{base: "http://127.0.0.1:" + port, token: os.Getenv("DAPR_API_TOKEN")}
	producer := NewProducer(app)
	must := func(err error) {
		if err != nil {
			fmt.Fprintln(os.Stderr, "publish failed:", err)
			os.Exit(1)
		}
	}

	if *poison {
		bad := producer.FieldUpdated("workflows", "poison-target", "f", 1)
		delete(bad, "seq") // malformed: no sequence number
		must(sidecar.Publish(CloudEvent(bad)))
		unsafe := producer.FieldUpdated("workflows", "ok", "f", 1)
		unsafe["state_id"] = "../etc" // an id that is not one safe path segment
		must(sidecar.Publish(CloudEvent(unsafe)))
	}
	want := map[string]any{"status": "running", "owner": "go"}
	must(sidecar.Publish(CloudEvent(producer.ObjectReplaced("workflows", *stateID, want))))
	var packed []map[string]any
	for i := 1; i <= *fields; i++ {
		want["progress"] = i
		event := producer.FieldUpdated("workflows", *stateID, "progress", i)
		if i%2 == 0 {
			packed = append(packed, event) // every other update travels in one packed message
		} else {
			must(sidecar.Publish(CloudEvent(event)))
		}
	}
	if len(packed) > 0 {
		must(sidecar.Publish(Batch(producer.id+":batch:1", packed)))
	}
	want["status"] = "done"
	must(sidecar.Publish(CloudEvent(producer.FieldUpdated("workflows", *stateID, "status", "done"))))
	out, _ := json.Marshal(map[string]any{"producer": producer.id, "app": app, "state": want})
	fmt.Println(string(out))
}
