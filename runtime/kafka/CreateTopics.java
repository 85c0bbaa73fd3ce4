// Creates the topics the stack needs, each with the given partition count, and checks
// that every one has it. Run by statestore/devstack/servers/kafka.py as a single-file program:
//   java -cp '<lib>/*' CreateTopics.java <bootstrap> <partitions> <topic>...
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.errors.TopicExistsException;

public class CreateTopics {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        int partitions = Integer.parseInt(args[1]);
        List<String> names = List.of(args).subList(2, args.length);
        try (Admin admin = Admin.create(props)) {
            List<NewTopic> topics = new ArrayList<>();
            for (String name : names) topics.add(new NewTopic(name, partitions, (short) 1));
            for (var entry : admin.createTopics(topics).values().entrySet()) {
                try {
                    entry.getValue().get();
                } catch (ExecutionException e) {
                    if (!(e.getCause() instanceof TopicExistsException)) throw e;
                }
            }
            Map<String, TopicDescription> described = admin.describeTopics(names).allTopicNames().get();
            for (TopicDescription d : described.values()) {
                System.out.println(d.name() + " " + d.partitions().size());
                if (d.partitions().size() != partitions) {
                    System.err.println("topic " + d.name() + " has " + d.partitions().size()
                        + " partitions, expected " + partitions);
                    System.exit(2);
                }
            }
        }
    }
}
